// #/agents: the per-user agents (GET /v1/agents); #/agents/<user>: one user's agent,
// its inbox and replies, schedules and usage, refreshed by the page's one timer.

import { api, query } from "../api.js";
import { clear, h, setText } from "../dom.js";
import * as fmt from "../fmt.js";
import { onTick } from "../ticker.js";
import { pagedList } from "../paged.js";
import { badge, bar, errorBox, field, toast } from "../ui.js";

const POLL_MS = 3000;

function openUserForm() {
  const input = h("input", { placeholder: "user id", "aria-label": "user id", size: 18 });
  const form = h("form", { class: "open-run" }, input, h("button", { type: "submit" }, "Open agent"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (input.value.trim()) location.hash = "#/agents/" + encodeURIComponent(input.value.trim());
  });
  return form;
}

function usageText(u) {
  u = u || {};
  return `${fmt.num(u.tokens)} tokens · ${fmt.num(u.messages)} messages · ${fmt.num(u.jobs)} jobs`;
}

export function agentsPage(view, params) {
  const template = params.get("template") || "";
  const tbody = h("tbody", { id: "agents-body" });
  const msg = h("div", {});
  const more = h("button", { type: "button", class: "ghost", hidden: true }, "Load more");
  view.append(h("section", { class: "card" },
    h("div", { class: "card-head" }, h("h1", {}, "Agents"),
      h("span", { class: "muted" }, "one long-lived agent per user"), h("span", { class: "spacer" }), openUserForm()),
    msg,
    h("div", { class: "table-wrap" }, h("table", { class: "grid" },
      h("thead", {}, h("tr", {}, ["User", "Template", "Status", "Messages", "Today", "Total", "Since"].map((c) => h("th", {}, c)))),
      tbody)),
    more));

  function render(items) {
    clear(tbody);
    for (const a of items) {
      tbody.append(h("tr", { dataset: { user: a.user_id } },
        h("td", {}, h("a", { href: "#/agents/" + encodeURIComponent(a.user_id) }, a.user_id)),
        h("td", {}, a.template),
        h("td", {}, badge(a.status)),
        h("td", { class: "num" }, fmt.num(a.messages)),
        h("td", {}, usageText(a.usage_today)),
        h("td", {}, usageText(a.usage_total)),
        h("td", { class: "nowrap" }, fmt.time(a.created_at))));
    }
    if (!items.length) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No agents yet.")));
  }

  pagedList({
    fetchPage: (limit, cursor) => api("/v1/agents" + query({ template, limit, cursor })),
    render, msg, more, pollMs: POLL_MS,
  });
}

export function agentPage(view, user) {
  const base = `/v1/agents/${encodeURIComponent(user)}`;
  const status = badge("loading");
  const info = h("div", { class: "stats", id: "agent-info" });
  const usageBox = h("div", { class: "stats", id: "agent-usage" });
  const inbox = h("tbody", { id: "inbox-body" });
  const schedules = h("tbody", { id: "schedules-body" });
  const msg = h("div", {});
  const text = h("textarea", { rows: 2, placeholder: "Message to this user's agent", "aria-label": "message" });
  const send = h("form", { class: "send" }, text, h("button", { type: "submit", class: "primary" }, "Send"));
  send.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!text.value.trim()) return;
    try {
      const r = await api(`${base}/messages`, { method: "POST", body: { text: text.value } });
      text.value = "";
      toast(`Queued as ${r.message_id}`, "ok");
      refresh();
    } catch (err) {
      toast(`Not sent: ${err.message}`, "error");
    }
  });

  view.append(
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("a", { href: "#/agents", class: "back" }, "← Agents"),
        h("h1", {}, user), status, h("span", { class: "spacer" })),
      msg, info, h("h3", {}, "Usage"), usageBox),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Inbox and replies")), send,
      h("div", { class: "table-wrap" }, h("table", { class: "grid inbox" },
        h("thead", {}, h("tr", {}, ["#", "From", "Message", "Status", "Reply", "Tokens", "Asked", "Answered"].map((c) => h("th", {}, c)))),
        inbox))),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Schedules")),
      h("div", { class: "table-wrap" }, h("table", { class: "grid" },
        h("thead", {}, h("tr", {}, ["Id", "Prompt", "When", "Fired", "Last fired", "Created"].map((c) => h("th", {}, c)))),
        schedules))));

  const stat = (label, value, wide = false) =>
    h("div", { class: wide ? "stat wide" : "stat" }, h("span", { class: "stat-label" }, label), h("span", { class: "stat-value" }, value));
  let busy = false;
  let last = 0;

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const [agent, usage, messages, sched] = await Promise.all([
        api(base), api(`${base}/usage`), api(`${base}/messages` + query({ limit: 50 })), api(`${base}/schedules`),
      ]);
      clear(msg);
      const wf = agent.workflow || {};
      status.className = `badge s-${wf.status}`;
      setText(status, wf.status || "unknown");
      clear(info).append(
        stat("Template", agent.template), stat("Phase", wf.phase || "idle"),
        stat("Model", (agent.effective && agent.effective.model) || ""), stat("Since", fmt.time(agent.created_at)));
      const max = usage.max_daily_tokens;
      const today = usage.today || {};
      clear(usageBox).append(
        stat("Today", usageText(today), true), stat("Total", usageText(usage.total), true),
        h("div", { class: "stat wide" }, h("span", { class: "stat-label" }, "Daily token budget"),
          max ? bar((today.tokens || 0) / max, `${fmt.num(today.tokens)} of ${fmt.num(max)}`) : h("span", { class: "stat-value" }, "unlimited")));
      clear(inbox);
      for (const m of [...messages.messages].reverse()) {
        const reply = m.reply || m.error || "";
        inbox.append(h("tr", { dataset: { seq: m.seq } },
          h("td", { class: "num" }, m.seq), h("td", {}, m.kind),
          h("td", { class: "text" }, m.text), h("td", {}, badge(m.status)),
          h("td", { class: "text reply" }, reply.length > 400 ? reply.slice(0, 400) + "…" : reply),
          h("td", { class: "num" }, m.usage ? fmt.num(m.usage.tokens ?? (m.usage.prompt_tokens || 0) + (m.usage.completion_tokens || 0)) : ""),
          h("td", { class: "nowrap" }, fmt.time(m.created_at)), h("td", { class: "nowrap" }, fmt.time(m.answered_at))));
      }
      if (!messages.messages.length) inbox.append(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No messages yet.")));
      clear(schedules);
      for (const s of sched.schedules) {
        schedules.append(h("tr", {},
          h("td", { class: "mono" }, s.id), h("td", { class: "text" }, s.prompt),
          h("td", {}, s.every_s ? `every ${fmt.duration(s.every_s * 1000)}` : `daily at ${s.daily_at} UTC`),
          h("td", { class: "num" }, s.fired), h("td", { class: "nowrap" }, fmt.time(s.last_fire_at)),
          h("td", { class: "nowrap" }, fmt.time(s.created_at))));
      }
      if (!sched.schedules.length) schedules.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No schedules.")));
    } catch (err) {
      clear(msg).append(errorBox(err));
    } finally {
      busy = false;
      last = Date.now();
    }
  }

  refresh();
  onTick((now) => {
    if (document.visibilityState === "visible" && now - last >= POLL_MS) refresh();
  });
}
