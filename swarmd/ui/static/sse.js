// Server-sent events over fetch(): EventSource cannot send an Authorization
// header, and a token must never go into a URL. On a dropped connection it
// reconnects with backoff and sends Last-Event-ID, so the server resumes after the
// last event received and nothing is missed. A 204 means the stream is over.

import { authHeaders } from "./api.js";

/** Parse "id/event/data" blocks out of text chunks; calls emit(event) per block. */
export function parser(emit) {
  let buf = "";
  let ev = { id: null, event: "message", data: [] };
  return (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.search(/\r?\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf[nl] === "\r" ? 2 : 1));
      if (line === "") {
        if (ev.data.length || ev.id !== null) emit({ ...ev, data: ev.data.join("\n") });
        ev = { id: null, event: "message", data: [] };
      } else if (line.startsWith(":")) {
        emit({ event: "comment", data: line.slice(1).trim(), id: null });
      } else {
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "data") ev.data.push(value);
        else if (field === "event") ev.event = value;
        else if (field === "id") ev.id = value;
      }
    }
  };
}

/**
 * Follow an SSE endpoint until it ends (an "end" or "error" event, or a 204) or
 * stop() is called. onEvent({event, data, id}); onState("live"|"reconnecting"|"ended").
 */
export function follow(path, { onEvent, onState = () => {} }) {
  const ctl = new AbortController();
  let lastId = null;
  let stopped = false;
  let delay = 500;

  async function once() {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const r = await fetch(path, { headers, signal: ctl.signal, cache: "no-store", credentials: "omit" });
    if (r.status === 204) return "ended";
    if (!r.ok) {
      const err = new Error(`stream answered HTTP ${r.status}`);
      err.status = r.status;
      throw err;
    }
    onState("live");
    delay = 500;
    let ended = false;
    const feed = parser((ev) => {
      if (ev.id !== null) lastId = ev.id;
      if (ev.event === "end" || ev.event === "error") ended = true;
      onEvent(ev);
    });
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      feed(value);
    }
    return ended ? "ended" : "dropped";
  }

  (async () => {
    while (!stopped) {
      let outcome;
      try {
        outcome = await once();
      } catch (err) {
        if (stopped || err.name === "AbortError") return;
        if (err.status === 401 || err.status === 404) {
          onState("ended");
          onEvent({ event: "error", data: JSON.stringify({ message: err.message }), id: null });
          return;
        }
        outcome = "dropped";
      }
      if (outcome === "ended") {
        onState("ended");
        return;
      }
      onState("reconnecting");
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 8000);
    }
  })();

  return {
    stop() {
      stopped = true;
      ctl.abort();
    },
    get lastId() {
      return lastId;
    },
  };
}
