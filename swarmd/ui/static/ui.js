// Shared widgets: status badges, progress bars, the confirmation dialog, toasts.

import { h, setText } from "./dom.js";

export function badge(status) {
  return h("span", { class: `badge s-${status || "unknown"}` }, status || "unknown");
}

export function setBadge(el, status) {
  el.className = `badge s-${status || "unknown"}`;
  setText(el, status || "unknown");
}

export function bar(fraction, label) {
  const fill = h("span", { class: "bar-fill" });
  const el = h("span", { class: "bar" }, fill, h("span", { class: "bar-label" }, label || ""));
  setBar(el, fraction, label);
  return el;
}

export function setBar(el, fraction, label) {
  const f = Math.max(0, Math.min(1, isFinite(fraction) ? fraction : 0));
  el.firstChild.style.width = (f * 100).toFixed(1) + "%";
  setText(el.lastChild, label || "");
}

/** Ask before a consequential action; resolves true if confirmed. */
export function confirmAction(title, text, okLabel, danger = false) {
  const dlg = document.getElementById("confirm-dialog");
  const form = document.getElementById("confirm-form");
  const ok = document.getElementById("confirm-ok");
  setText(document.getElementById("confirm-title"), title);
  setText(document.getElementById("confirm-text"), text);
  setText(ok, okLabel);
  ok.className = danger ? "danger" : "primary";
  return new Promise((resolve) => {
    const done = (v) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dlg.removeEventListener("cancel", onCancel);
      if (dlg.open) dlg.close();
      resolve(v);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      done(true);
    };
    const onCancel = (e) => {
      e.preventDefault();
      done(false);
    };
    const cancel = document.getElementById("confirm-cancel");
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dlg.addEventListener("cancel", onCancel);
    dlg.showModal();
    ok.focus();
  });
}

let toastTimer = null;
export function toast(text, kind = "info") {
  const el = document.getElementById("toast");
  setText(el, text);
  el.className = `toast ${kind}`;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 4000);
}

export function errorBox(err) {
  return h("div", { class: "error-box" }, err && err.message ? err.message : String(err));
}

export function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}
