// A virtualised list: only the rows in view (plus a few) exist in the DOM, and
// their elements are reused as the list scrolls, so 1,000 or 10,000 items cost
// the same handful of nodes. Rows have a fixed height.

import { h } from "./dom.js";

export class VirtualList {
  /**
   * @param {HTMLElement} host  element to fill (gets a scrolling viewport)
   * @param {{rowHeight: number, create: () => HTMLElement,
   *          render: (el: HTMLElement, item: any, index: number) => void,
   *          maxHeight?: number, overscan?: number}} opts
   */
  constructor(host, opts) {
    this.opts = { overscan: 6, maxHeight: 560, ...opts };
    this.items = [];
    this.rows = [];
    this.viewport = h("div", { class: "vlist", role: "list" });
    this.spacer = h("div", { class: "vlist-spacer" });
    this.viewport.append(this.spacer);
    host.append(this.viewport);
    this.viewport.addEventListener("scroll", () => this.paint(), { passive: true });
    this.resize = new ResizeObserver(() => this.paint());
    this.resize.observe(this.viewport);
  }

  setItems(items) {
    this.items = items;
    const total = items.length * this.opts.rowHeight;
    this.spacer.style.height = total + "px";
    this.viewport.style.height = Math.min(total, this.opts.maxHeight) + "px";
    this.paint();
  }

  /** Re-render the rows in view (e.g. each tick, for elapsed times). */
  refresh() {
    this.paint(true);
  }

  scrollToIndex(i) {
    this.viewport.scrollTop = i * this.opts.rowHeight;
    this.paint();
  }

  paint(force = false) {
    const { rowHeight, overscan } = this.opts;
    const height = this.viewport.clientHeight || this.opts.maxHeight;
    const first = Math.max(0, Math.floor(this.viewport.scrollTop / rowHeight) - overscan);
    const last = Math.min(this.items.length, Math.ceil((this.viewport.scrollTop + height) / rowHeight) + overscan);
    const needed = last - first;
    while (this.rows.length < needed) {
      const el = this.opts.create();
      el.classList.add("vrow");
      el.setAttribute("role", "listitem");
      el.style.height = rowHeight + "px";
      this.spacer.append(el);
      this.rows.push({ el, index: -1, item: null });
    }
    for (let k = 0; k < this.rows.length; k++) {
      const row = this.rows[k];
      const i = first + k;
      if (i >= last) {
        row.el.hidden = true;
        row.index = -1;
        continue;
      }
      row.el.hidden = false;
      const item = this.items[i];
      if (force || row.index !== i || row.item !== item) {
        row.el.style.transform = `translateY(${i * rowHeight}px)`;
        this.opts.render(row.el, item, i);
        row.index = i;
        row.item = item;
      }
    }
  }

  destroy() {
    this.resize.disconnect();
    this.viewport.remove();
  }
}
