// The page's one timer. Everything that must refresh (elapsed times, polling,
// throttled re-fetches) subscribes here, so a page with 1,000 agents still runs a
// single interval, not one per row. Subscriptions end when the page changes.

const subs = new Set();
let timer = null;

function tick() {
  const now = Date.now();
  for (const fn of [...subs]) {
    try {
      fn(now);
    } catch (err) {
      console.error("tick handler failed", err);
    }
  }
}

/** Call fn(now) about every second while the page is shown; returns the unsubscribe. */
export function onTick(fn) {
  subs.add(fn);
  if (timer === null) timer = setInterval(tick, 1000);
  return () => subs.delete(fn);
}

/** Drop every subscription (the router calls this when it leaves a page). */
export function resetTicks() {
  subs.clear();
}

/** How many timers the page runs (the browser tests check it stays one). */
export function timerCount() {
  return timer === null ? 0 : 1;
}
