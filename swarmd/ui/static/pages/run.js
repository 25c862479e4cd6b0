// #/runs/<id>: one run. Its status arrives live over SSE (fetch + Last-Event-ID
// resume); the timeline of its agents is re-read (throttled) when the run moves;
// outputs and the answer are fetched only when asked for.

import { ApiError, api, query } from "../api.js";
import { clear, h, setText } from "../dom.js";
import * as fmt from "../fmt.js";
import { follow } from "../sse.js";
import { onTick } from "../ticker.js";
import { VirtualList } from "../vlist.js";
import { badge, bar, confirmAction, errorBox, setBadge, setBar, toast } from "../ui.js";

const ACTIVE = new Set(["pending", "running", "suspended"]);
const FINISHED = new Set(["completed", "failed", "terminated"]);
const ROW = 30;
const PREVIEW_CHARS = 4000;
const REFETCH_MS = 1500;
const LOG_MAX = 300;

export function runPage(view, runId) {
  const enc = encodeURIComponent(runId);
  const base = `/v1/runs/${enc}`;
  let run = null; // the latest run view (from the stream)
  let tl = null; // the latest timeline
  let dirty = true;
  let fetching = false;
  let lastFetch = 0;
  let selected = null;
  let answerShown = false;
  let filter = "all";

  // -- header -------------------------------------------------------------
  const status = badge("loading");
  const phase = h("span", { class: "phase", id: "run-phase" });
  const progress = bar(0, "");
  progress.id = "run-progress";
  const stat = (label, id) => {
    const v = h("span", { class: "stat-value", id });
    return [h("div", { class: "stat" }, h("span", { class: "stat-label" }, label), v), v];
  };
  const [sTok, vTok] = stat("Tokens", "run-tokens");
  const [sIo, vIo] = stat("In / out", "run-io");
  const [sCalls, vCalls] = stat("LLM calls", "run-calls");
  const [sCost, vCost] = stat("Cost", "run-cost");
  const [sStart, vStart] = stat("Started", "run-started");
  const [sDur, vDur] = stat("Duration", "run-duration");
  const [sSwarm, vSwarm] = stat("Swarm", "run-swarm");
  const note = h("div", { class: "run-note", id: "run-note", hidden: true });

  // disabled until the first view says what the run's status allows
  const btn = (label, cls, onclick, id) => h("button", { type: "button", class: cls, onclick, id, disabled: true }, label);
  const bApprove = btn("Approve", "primary", () => act("approve"), "act-approve");
  const bPause = btn("Pause", "", () => act("pause"), "act-pause");
  const bResume = btn("Resume", "", () => act("resume"), "act-resume");
  const bTerminate = btn("Terminate", "danger-ghost", () => act("terminate"), "act-terminate");
  const bPurge = btn("Purge", "danger-ghost", () => act("purge"), "act-purge");

  view.append(h("section", { class: "card run-head" },
    h("div", { class: "card-head" },
      h("a", { href: "#/runs", class: "back" }, "← Runs"),
      h("h1", { class: "mono", title: runId }, runId), status, phase,
      h("span", { class: "spacer" }),
      h("div", { class: "actions" }, bApprove, bPause, bResume, bTerminate, bPurge)),
    h("div", { class: "progress-row" }, progress),
    h("div", { class: "stats" }, sSwarm, sTok, sIo, sCalls, sCost, sStart, sDur),
    note));

  // -- answer -------------------------------------------------------------
  const answerBody = h("div", { class: "answer", id: "run-answer" }, h("span", { class: "muted" }, "No answer yet."));
  view.append(h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Answer")), answerBody));

  // -- timeline -----------------------------------------------------------
  const tlSummary = h("span", { class: "muted", id: "timeline-summary" });
  const filters = h("div", { class: "seg" }, ["all", "running", "answered", "failed"].map((f) =>
    h("button", { type: "button", class: f === filter ? "on" : "", dataset: { filter: f }, onclick: (e) => {
      filter = f;
      for (const b of filters.children) b.classList.toggle("on", b.dataset.filter === f);
      paintTimeline();
      e.currentTarget.blur();
    } }, f)));
  const axis = h("div", { class: "tl-row tl-headrow" },
    h("span", { class: "c-name" }, "Agent"), h("span", { class: "c-status" }, "Status"),
    h("span", { class: "c-track axis", id: "tl-axis" }), h("span", { class: "c-num" }, "Turns"),
    h("span", { class: "c-num" }, "Retries"), h("span", { class: "c-num" }, "Tokens"),
    h("span", { class: "c-num" }, "Cost"), h("span", { class: "c-num" }, "Took"));
  const listHost = h("div", { class: "timeline", id: "timeline" });
  const detail = h("div", { class: "detail", id: "agent-detail", hidden: true });
  view.append(h("section", { class: "card" },
    h("div", { class: "card-head" }, h("h2", {}, "Timeline"), tlSummary, h("span", { class: "spacer" }), filters),
    axis, listHost, detail));

  const list = new VirtualList(listHost, {
    rowHeight: ROW,
    maxHeight: 18 * ROW,
    create: () => {
      const el = h("div", { class: "tl-row" },
        h("span", { class: "c-name" }), h("span", { class: "badge" }),
        h("span", { class: "c-track" }, h("span", { class: "tl-bar" })),
        h("span", { class: "c-num" }), h("span", { class: "c-num" }), h("span", { class: "c-num" }),
        h("span", { class: "c-num" }), h("span", { class: "c-num" }));
      el.addEventListener("click", () => {
        const id = el.dataset.id;
        if (id) select(id);
      });
      return el;
    },
    render: renderRow,
  });

  // -- events -------------------------------------------------------------
  const conn = h("span", { class: "conn-state", id: "stream-state" }, "connecting");
  const log = h("ol", { class: "log", id: "event-log" });
  view.append(h("section", { class: "card" },
    h("div", { class: "card-head" }, h("h2", {}, "Events"), conn), log));

  // -- behaviour ----------------------------------------------------------
  // the time axis: the run's start to its end (or now), computed once per paint
  let axisSpan = [NaN, NaN];
  function updateSpan() {
    const t0 = fmt.ms((tl && tl.created_at) || (run && run.created_at));
    let t1 = run && FINISHED.has(run.status) && run.updated_at ? fmt.ms(run.updated_at) : Date.now();
    if (tl) for (const e of tl.entries) if (e.ended_at) t1 = Math.max(t1, fmt.ms(e.ended_at));
    axisSpan = [t0, Math.max(t1, t0 + 1)];
    setText(document.getElementById("tl-axis"), isFinite(t0) ? `0 — ${fmt.duration(axisSpan[1] - t0)}` : "");
  }

  function renderRow(el, e) {
    const [name, st, track, turns, retries, tok, cost, took] = el.children;
    if (e.placeholder) {
      el.dataset.id = "";
      el.className = "vrow tl-row queued";
      setText(name, e.name);
      setBadge(st, "queued");
      track.firstChild.className = "tl-bar none";
      for (const c of [turns, retries, tok, cost, took]) setText(c, "");
      return;
    }
    el.dataset.id = e.id;
    el.className = "vrow tl-row" + (e.id === selected ? " selected" : "") + (e.kind === "step" ? " step" : "");
    el.title = e.error ? `${e.name}: ${e.error}` : e.name;
    setText(name, e.name);
    setBadge(st, e.status);
    const [t0, t1] = axisSpan;
    const s = fmt.ms(e.started_at);
    const end = e.ended_at ? fmt.ms(e.ended_at) : Date.now();
    const width = Math.max(0.004, (end - s) / (t1 - t0));
    const b = track.firstChild;
    b.className = `tl-bar s-${e.status}`;
    b.style.left = (((s - t0) / (t1 - t0)) * 100).toFixed(2) + "%";
    b.style.width = (Math.min(width, 1) * 100).toFixed(2) + "%";
    setText(turns, e.turns || "");
    setText(retries, e.retries || "");
    retries.classList.toggle("warn", e.retries > 0);
    setText(tok, fmt.tokens(e.usage));
    setText(cost, fmt.cost(e.usage));
    setText(took, fmt.duration(end - s));
  }

  function rows() {
    if (!tl) return [];
    let out = tl.entries;
    if (filter !== "all") out = out.filter((e) => (filter === "answered" ? e.status === "answered" || e.status === "max_turns" : e.status === filter));
    if ((filter === "all" || filter === "running") && tl.queued > 0) {
      const queued = [];
      for (let i = 0; i < tl.queued; i++) queued.push({ placeholder: true, name: "queued", id: "q" + i });
      out = out.concat(queued);
    }
    return out;
  }

  function paintTimeline() {
    updateSpan();
    list.setItems(rows());
    if (!tl) return;
    const agents = tl.entries.filter((e) => e.kind === "agent");
    const count = (st) => agents.filter((e) => e.status === st).length;
    const parts = [`${agents.length} agent${agents.length === 1 ? "" : "s"}`];
    for (const st of ["running", "answered", "max_turns", "failed", "blocked"]) if (count(st)) parts.push(`${count(st)} ${st}`);
    if (tl.queued) parts.push(`${tl.queued} queued`);
    const steps = tl.entries.length - agents.length;
    if (steps) parts.push(`${steps} step${steps === 1 ? "" : "s"}`);
    parts.push(`${fmt.tokens(tl.usage)} tokens`);
    setText(tlSummary, parts.join(" · "));
  }

  async function fetchTimeline() {
    if (fetching) return;
    fetching = true;
    dirty = false;
    try {
      tl = await api(`${base}/agents`);
      paintTimeline();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) toast(`timeline: ${err.message}`, "error");
    } finally {
      fetching = false;
      lastFetch = Date.now();
    }
  }

  async function select(id) {
    selected = id;
    list.refresh();
    detail.hidden = false;
    clear(detail).append(h("span", { class: "muted" }, "Loading output…"));
    await showOutput(id, PREVIEW_CHARS);
  }

  async function showOutput(id, maxChars) {
    try {
      const o = await api(`${base}/agents/${encodeURIComponent(id)}` + query({ max_chars: maxChars }));
      if (selected !== id) return;
      const head = h("div", { class: "detail-head" },
        h("strong", {}, o.name), badge(o.status),
        h("span", { class: "muted" }, `${fmt.num(o.content_chars)} chars`),
        h("span", { class: "spacer" }),
        h("button", { type: "button", class: "ghost", onclick: () => { selected = null; detail.hidden = true; list.refresh(); } }, "Close"));
      const body = h("pre", { class: "output" }, o.content || (o.error ? "" : "(empty)"));
      clear(detail).append(head);
      if (o.error) detail.append(h("div", { class: "error-box" }, o.error));
      detail.append(body);
      if (o.truncated) {
        detail.append(h("button", { type: "button", class: "ghost", onclick: () => showOutput(id, null) },
          `Load all ${fmt.num(o.content_chars)} characters`));
      }
    } catch (err) {
      clear(detail).append(errorBox(err));
    }
  }

  async function showAnswer(maxChars) {
    try {
      const a = await api(`${base}/answer` + query({ max_chars: maxChars }));
      clear(answerBody);
      if (a.answer === null) {
        answerBody.append(h("span", { class: "muted" }, a.error || (a.stop_reason ? `Stopped: ${a.stop_reason}` : "No answer.")));
        return;
      }
      answerBody.append(h("pre", { class: "output" }, a.answer || "(empty)"));
      if (a.truncated) {
        answerBody.append(h("button", { type: "button", class: "ghost", onclick: () => showAnswer(null) },
          `Show the full answer (${fmt.num(a.answer_chars)} characters)`));
      }
    } catch (err) {
      clear(answerBody).append(errorBox(err));
    }
  }

  function paintHead() {
    if (!run) return;
    setBadge(status, run.status);
    const p = run.progress || {};
    setText(phase, p.phase || "");
    const total = p.agents_total || 0;
    const done = p.agents_done || 0;
    setBar(progress, total ? done / total : run.status === "completed" ? 1 : 0,
      total ? `${done} of ${total} agents done` : p.phase || run.status);
    const u = run.usage || p.usage;
    setText(vTok, fmt.tokens(u));
    setText(vIo, u ? `${fmt.num(u.prompt_tokens)} / ${fmt.num(u.completion_tokens)}` : "");
    setText(vCalls, u ? fmt.num(u.calls) : "0");
    setText(vCost, fmt.cost(u));
    setText(vSwarm, run.swarm || "");
    setText(vStart, fmt.time(run.created_at));
    const end = FINISHED.has(run.status) ? fmt.ms(run.updated_at) : Date.now();
    setText(vDur, fmt.duration(end - fmt.ms(run.created_at)));
    const notes = [];
    if (run.stop_reason) notes.push(`Stopped early: ${run.stop_reason}`);
    if (run.error) notes.push(`Error: ${run.error}`);
    if (p.phase === "awaiting_approval") notes.push("Waiting for approval.");
    setText(note, notes.join(" · "));
    note.hidden = !notes.length;
    const active = ACTIVE.has(run.status);
    bApprove.disabled = !active;
    bApprove.classList.toggle("attention", p.phase === "awaiting_approval");
    bPause.disabled = !(run.status === "pending" || run.status === "running");
    bResume.disabled = run.status !== "suspended";
    bTerminate.disabled = !active;
    bPurge.disabled = !FINISHED.has(run.status);
  }

  function logEvent(ev, v) {
    const p = (v && v.progress) || {};
    const what = v
      ? [v.status, p.phase, p.agents_total ? `${p.agents_done}/${p.agents_total} agents` : null,
         v.usage || p.usage ? `${fmt.tokens(v.usage || p.usage)} tokens` : null].filter(Boolean).join(" · ")
      : ev.data;
    log.prepend(h("li", { class: `ev ev-${ev.event}` },
      h("span", { class: "ev-time" }, fmt.time(new Date().toISOString())),
      h("span", { class: "ev-kind" }, ev.event),
      h("span", { class: "ev-id mono" }, ev.id ? `#${ev.id}` : ""),
      h("span", { class: "ev-what" }, what)));
    while (log.children.length > LOG_MAX) log.lastChild.remove();
  }

  const stream = follow(`${base}/stream`, {
    onEvent(ev) {
      if (ev.event === "comment") {
        conn.dataset.beat = String(Date.now());
        return;
      }
      let v = null;
      try {
        v = JSON.parse(ev.data);
      } catch {
        v = null;
      }
      if (ev.event === "progress" || ev.event === "end") {
        run = v;
        paintHead();
        dirty = true;
        if (ev.event === "end" && !answerShown) {
          answerShown = true;
          showAnswer(PREVIEW_CHARS);
        }
        logEvent(ev, v);
      } else if (ev.event === "error") {
        logEvent(ev, null);
        if (!run) clear(answerBody).append(errorBox(new Error((v && v.message) || "stream failed")));
      }
    },
    onState(s) {
      setText(conn, s === "live" ? "live" : s === "ended" ? "ended" : "reconnecting…");
      conn.className = `conn-state ${s}`;
    },
  });

  onTick((now) => {
    if (dirty && !fetching && now - lastFetch >= REFETCH_MS) fetchTimeline();
    else if (run && ACTIVE.has(run.status) && !fetching && now - lastFetch >= 5000) fetchTimeline();
    if (run && ACTIVE.has(run.status)) {
      paintHead();
      updateSpan();
      list.refresh();
    }
  });

  const ACTIONS = {
    approve: ["Approve this run?", "The run's approval gate opens and it finishes with approved: true.", "Approve", false,
      () => api(`${base}/events/approval`, { method: "POST", body: { approved: true } })],
    pause: ["Pause this run?", "It takes no new step until resumed; agents already running finish their current step.", "Pause", false,
      () => api(`${base}/pause`, { method: "POST" })],
    resume: ["Resume this run?", "It continues where it stopped.", "Resume", false,
      () => api(`${base}/resume`, { method: "POST" })],
    terminate: ["Terminate this run?", "The run and all its agents stop for good. Calls in flight finish, nothing new starts.", "Terminate", true,
      () => api(`${base}/terminate`, { method: "POST", body: { reason: "terminated from the run viewer" } })],
    purge: ["Purge this run?", "Its state and history, and its agents', are deleted. This cannot be undone.", "Purge", true,
      () => api(base, { method: "DELETE" })],
  };

  async function act(name) {
    const [title, text, ok, danger, call] = ACTIONS[name];
    if (!(await confirmAction(title, text, ok, danger))) return;
    try {
      await call();
      toast(`${ok}: done`, "ok");
      if (name === "purge") location.hash = "#/runs";
    } catch (err) {
      toast(`${ok} refused: ${err.message}`, "error");
    }
  }

  fetchTimeline();
  return {
    leave() {
      stream.stop();
      list.destroy();
    },
  };
}
