// The API client: every call carries the bearer token as an Authorization header.
// The token lives in sessionStorage (this tab only) and never goes into a URL,
// the page's markup or the console.

const KEY = "swarmd.token";
let onUnauthorized = () => {};

export function token() {
  return sessionStorage.getItem(KEY) || "";
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t.trim());
  else sessionStorage.removeItem(KEY);
}

export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || null;
    this.field = err.field || null;
  }
}

export function authHeaders(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : { ...extra };
}

/** fetch JSON from the API; throws ApiError on a non-2xx answer. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = authHeaders(body === undefined ? {} : { "content-type": "application/json" });
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
    credentials: "omit",
  });
  if (r.status === 204) return null;
  let data = null;
  const text = await r.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!r.ok) {
    if (r.status === 401) onUnauthorized();
    throw new ApiError(r.status, data);
  }
  return data;
}

/** A query string from an object, leaving out empty values (arrays repeat the key). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) if (one !== "") q.append(k, one);
  }
  const s = q.toString();
  return s ? "?" + s : "";
}
