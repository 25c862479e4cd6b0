// #/runs: the runs newest first (GET /v1/runs), with filters, live status and cost.

import { api, query } from "../api.js";
import { clear, h, setText } from "../dom.js";
import * as fmt from "../fmt.js";
import { pagedList } from "../paged.js";
import { badge, bar, field } from "../ui.js";

const STATUSES = ["", "pending", "running", "suspended", "completed", "failed", "terminated"];
const ACTIVE = new Set(["pending", "running", "suspended"]);
const POLL_MS = 2000;

function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function isoOf(local) {
  if (!local) return "";
  const d = new Date(local);
  return isNaN(d) ? "" : d.toISOString();
}

export function runsPage(view, params) {
  const filters = {
    status: params.get("status") || "",
    swarm: params.get("swarm") || "",
    user: params.get("user") || "",
    started_after: params.get("started_after") || "",
    started_before: params.get("started_before") || "",
  };
  const status = h("select", { name: "status", "aria-label": "status" },
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s || "any")));
  const swarm = h("input", { name: "swarm", value: filters.swarm, placeholder: "any swarm", size: 14 });
  const user = h("input", { name: "user", value: filters.user, placeholder: "any user", size: 12 });
  const after = h("input", { name: "started_after", type: "datetime-local", value: localInput(filters.started_after) });
  const before = h("input", { name: "started_before", type: "datetime-local", value: localInput(filters.started_before) });
  const form = h("form", { class: "filters", id: "run-filters" },
    field("Status", status), field("Swarm", swarm), field("User", user),
    field("Started after", after), field("Started before", before),
    h("button", { type: "submit", class: "primary" }, "Filter"),
    h("button", { type: "button", class: "ghost", onclick: () => (location.hash = "#/runs") }, "Reset"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = "#/runs" + query({
      status: status.value, swarm: swarm.value.trim(), user: user.value.trim(),
      started_after: isoOf(after.value), started_before: isoOf(before.value),
    });
  });

  const openId = h("input", { placeholder: "run id", "aria-label": "run id", size: 28 });
  const open = h("form", { class: "open-run" }, openId, h("button", { type: "submit" }, "Open run"));
  open.addEventListener("submit", (e) => {
    e.preventDefault();
    if (openId.value.trim()) location.hash = "#/runs/" + encodeURIComponent(openId.value.trim());
  });

  const summary = h("span", { class: "muted", id: "runs-summary" });
  const tbody = h("tbody", { id: "runs-body" });
  const table = h("table", { class: "grid runs" },
    h("thead", {}, h("tr", {},
      ["Run", "Swarm", "Status", "Progress", "Tokens", "Cost", "User", "Started", "Duration"].map((c) => h("th", {}, c)))),
    tbody);
  const more = h("button", { type: "button", class: "ghost", hidden: true }, "Load more");
  const msg = h("div", {});
  view.append(
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h1", {}, "Runs"), summary, h("span", { class: "spacer" }), open),
      form, msg, h("div", { class: "table-wrap" }, table), more));

  function render(items) {
    clear(tbody);
    const now = Date.now();
    for (const r of items) {
      const p = r.progress || {};
      const total = p.agents_total || 0;
      const done = p.agents_done || 0;
      const end = r.ended_at ? fmt.ms(r.ended_at) : ACTIVE.has(r.status) ? now : NaN;
      tbody.append(h("tr", { dataset: { run: r.run_id, status: r.status } },
        h("td", {}, h("a", { href: "#/runs/" + encodeURIComponent(r.run_id), class: "mono", title: r.run_id }, fmt.shortId(r.run_id))),
        h("td", {}, r.swarm || ""),
        h("td", {}, badge(r.status)),
        h("td", { class: "progress-cell" }, bar(total ? done / total : r.status === "completed" ? 1 : 0,
          total ? `${done}/${total}${p.phase ? " · " + p.phase : ""}` : p.phase || "")),
        h("td", { class: "num", dataset: { field: "tokens" } }, fmt.tokens(r.usage)),
        h("td", { class: "num", dataset: { field: "cost" } }, fmt.cost(r.usage)),
        h("td", {}, r.user || ""),
        h("td", { class: "nowrap" }, fmt.time(r.created_at)),
        h("td", { class: "num nowrap" }, fmt.duration(end - fmt.ms(r.created_at)))));
    }
    if (!items.length) tbody.append(h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No runs match.")));
    const live = items.filter((r) => ACTIVE.has(r.status)).length;
    setText(summary, `${items.length} shown${live ? ` · ${live} in flight` : ""}`);
  }

  pagedList({
    fetchPage: (limit, cursor) => api("/v1/runs" + query({ ...filters, limit, cursor })),
    render, msg, more, pollMs: POLL_MS,
  });
}
