// The run viewer: a hash-routed single page over the swarmd API.
//   #/runs            the runs, with filters, live status and cost
//   #/runs/<id>       one run: timeline of its agents, answer, events, controls
//   #/agents          the per-user agents
//   #/agents/<user>   one user's agent: inbox, replies, schedules, usage

import { setToken, token, whenUnauthorized } from "./api.js";
import { clear, h } from "./dom.js";
import { resetTicks } from "./ticker.js";
import { toast } from "./ui.js";
import { runsPage } from "./pages/runs.js";
import { runPage } from "./pages/run.js";
import { agentsPage, agentPage } from "./pages/agents.js";

const view = document.getElementById("view");
let leave = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(qs || "") };
}

function route() {
  if (leave) leave();
  leave = null;
  resetTicks();
  clear(view);
  const { parts, params } = parseHash();
  const section = parts[0] || "runs";
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === section);
  }
  if (!token()) {
    // nothing is fetched without a token: the page opens once one is pasted
    view.append(h("section", { class: "card" }, h("h1", {}, "Paste the API token to continue"),
      h("p", { class: "muted" }, "Use the Token button at the top right.")));
    askToken();
    return;
  }
  let page;
  if (section === "runs" && parts[1]) page = runPage(view, parts[1]);
  else if (section === "agents" && parts[1]) page = agentPage(view, parts[1]);
  else if (section === "agents") page = agentsPage(view, params);
  else page = runsPage(view, params);
  leave = page && page.leave ? page.leave : null;
}

function askToken() {
  const dlg = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  input.value = "";
  if (!dlg.open) dlg.showModal();
  input.focus();
}

function initToken() {
  const dlg = document.getElementById("token-dialog");
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = document.getElementById("token-input").value;
    if (!v.trim()) return;
    setToken(v);
    document.getElementById("token-input").value = "";
    dlg.close();
    route();
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    setToken("");
    document.getElementById("token-input").value = "";
    toast("Token forgotten");
  });
  document.getElementById("token-btn").addEventListener("click", askToken);
  whenUnauthorized(() => {
    if (!dlg.open) {
      toast("The API refused the token: paste a valid one", "error");
      askToken();
    }
  });
}

initToken();
window.addEventListener("hashchange", route);
route();
