// A list page's data: the first page polled on the page's one timer while the tab
// is visible, "Load more" following the API's cursor, errors shown in place.

import { clear } from "./dom.js";
import { onTick } from "./ticker.js";
import { errorBox } from "./ui.js";

/**
 * @param {{fetchPage: (limit: number, cursor: string|null) => Promise<{items: any[], next_cursor: string|null}>,
 *          render: (items: any[]) => void, msg: HTMLElement, more: HTMLButtonElement, pollMs: number}} o
 */
export function pagedList({ fetchPage, render, msg, more, pollMs }) {
  let items = [];
  let cursor = null;
  let busy = false;
  let last = 0;

  async function load(append = false) {
    if (busy) return;
    busy = true;
    try {
      // a refresh re-reads as many items as are shown (up to the API's 200)
      const limit = append ? 50 : Math.max(50, Math.min(200, items.length));
      const page = await fetchPage(limit, append ? cursor : null);
      items = append ? items.concat(page.items) : page.items;
      cursor = page.next_cursor;
      clear(msg);
      render(items);
      more.hidden = !cursor;
    } catch (err) {
      clear(msg).append(errorBox(err));
    } finally {
      busy = false;
      last = Date.now();
    }
  }

  more.addEventListener("click", () => load(true));
  load();
  onTick((now) => {
    if (document.visibilityState === "visible" && now - last >= pollMs) load();
  });
}
