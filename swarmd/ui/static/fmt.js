// Formatting of numbers, money, times and durations.

const nf = new Intl.NumberFormat("en-US");

export function tokens(u) {
  if (!u) return "0";
  return nf.format((u.prompt_tokens || 0) + (u.completion_tokens || 0));
}

export function num(n) {
  return nf.format(n || 0);
}

export function cost(u) {
  const c = u ? u.cost_usd || 0 : 0;
  if (c === 0) return "$0";
  if (c < 0.01) return "$" + c.toFixed(5);
  return "$" + c.toFixed(c < 10 ? 4 : 2);
}

export function ms(iso) {
  return iso ? Date.parse(iso) : NaN;
}

export function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  const t = d.toLocaleTimeString("en-GB", { hour12: false });
  return sameDay ? t : d.toISOString().slice(0, 10) + " " + t;
}

export function duration(msec) {
  if (!isFinite(msec) || msec < 0) return "";
  const s = msec / 1000;
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 60) return Math.round(s) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " m " + String(Math.round(s % 60)).padStart(2, "0") + " s";
  return Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " m";
}

export function shortId(id) {
  return id && id.length > 14 ? id.slice(0, 12) + "…" : id;
}
