"""Run pulses: which runs this process is working on right now.

Every activity the workflow worker runs is wrapped (:func:`Pulse.wrap`, applied
to every registration in :mod:`swarmd.engine.runtime`) so that its start and
end are noted here, in memory, by **run id**: the workflow instance id up to
its first ``.`` (agent workflows are ``<run>.<key>`` and run ids have no dot).

Every ``pulse_interval_s`` the process publishes what it saw to one state key,
``swarmd-pulse.<owner>``, with a TTL of a few intervals. The run supervisor
(:mod:`swarmd.engine.supervisor`) reads the pulses of every live owner to tell
a run whose model is slow (a call still in flight somewhere) from a wedged one
(nothing happening anywhere). A killed process stops publishing and its pulse
expires with its TTL, so its calls stop counting as in flight.

Invariants: a call is in flight from the activity's start until it returns or
raises; ``last`` of a run only moves forward; recording never raises into the
activity (a pulse is advice, the activity's result is the truth).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swarmd.engine.dapr import DaprClient

log = logging.getLogger("swarmd.engine.pulse")

#: a run with nothing in flight is forgotten this long after its last call
FORGET_AFTER_S = 600.0


def pulse_key(owner: str) -> str:
    return f"swarmd-pulse.{owner}"


def run_of(workflow_id: str) -> str:
    """The run a workflow instance belongs to (agent workflows are ``<run>.<key>``,
    a revived run's generations ``<run>:g<n>``)."""
    return workflow_id.split(".", 1)[0].split(":", 1)[0]


@dataclass
class _RunPulse:
    last: float = 0.0
    inflight: dict[int, float] = field(default_factory=dict)  # call token -> started at


class Pulse:
    """In-memory record of this process's activity calls, by run. Thread-safe:
    activities run on the worker's loop and, for sync ones, on its thread pool."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._runs: dict[str, _RunPulse] = {}
        self._tokens = itertools.count(1)
        self.changed = True

    def begin(self, workflow_id: str) -> tuple[str, int]:
        run = run_of(workflow_id)
        now = time.time()
        with self._mu:
            token = next(self._tokens)
            p = self._runs.setdefault(run, _RunPulse())
            p.last = max(p.last, now)
            p.inflight[token] = now
            self.changed = True
        return run, token

    def end(self, handle: tuple[str, int]) -> None:
        run, token = handle
        with self._mu:
            p = self._runs.get(run)
            if p is not None:
                p.inflight.pop(token, None)
                p.last = max(p.last, time.time())
            self.changed = True

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{run: {"last": t, "inflight": n, "oldest": t | None}}``; forgets idle runs."""
        now = time.time()
        with self._mu:
            for run in [r for r, p in self._runs.items() if not p.inflight]:
                if now - self._runs[run].last > FORGET_AFTER_S:
                    del self._runs[run]
            return {
                run: {
                    "last": p.last,
                    "inflight": len(p.inflight),
                    "oldest": min(p.inflight.values()) if p.inflight else None,
                }
                for run, p in self._runs.items()
            }

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn(ctx, input)`` recording its call in this pulse (async or sync alike)."""

        def handle_of(ctx: Any) -> tuple[str, int] | None:
            wid = getattr(ctx, "workflow_id", None)
            return self.begin(wid) if isinstance(wid, str) and wid else None

        if inspect.iscoroutinefunction(inspect.unwrap(fn)):  # as the SDK decides it

            @functools.wraps(fn)
            async def async_wrapper(ctx: Any, *args: Any, **kwargs: Any) -> Any:
                h = handle_of(ctx)
                try:
                    out = fn(ctx, *args, **kwargs)
                    return (await out) if inspect.isawaitable(out) else out
                finally:
                    if h is not None:
                        self.end(h)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(ctx: Any, *args: Any, **kwargs: Any) -> Any:
            h = handle_of(ctx)
            try:
                out = fn(ctx, *args, **kwargs)
            except BaseException:
                if h is not None:
                    self.end(h)
                raise
            if h is not None and inspect.isawaitable(out):
                return _ending(out, lambda: self.end(h))
            if h is not None:
                self.end(h)
            return out

        return wrapper


async def _ending(aw: Any, done: Callable[[], None]) -> Any:
    try:
        return await aw
    finally:
        done()


async def publish_forever(
    pulse: Pulse, sidecar: DaprClient, owner: Callable[[], str | None], interval_s: float
) -> None:
    """Write this process's pulse every ``interval_s`` (TTL: a few intervals) while
    anything is in flight or changed; stop writing when idle (the key expires)."""
    ttl = max(3, int(interval_s * 4) + 1)
    last_write = 0.0
    while True:
        snap = pulse.snapshot()
        busy = any(p["inflight"] for p in snap.values())
        me = owner()
        stale = time.monotonic() - last_write > ttl / 2
        if me and (pulse.changed or (busy and stale) or (snap and stale)):
            pulse.changed = False
            try:
                await sidecar.save(
                    pulse_key(me), {"owner": me, "at": time.time(), "runs": snap}, ttl_s=ttl
                )
                last_write = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store may be down: try again next interval
                pulse.changed = True
                log.debug("pulse not published", extra={"error": str(exc)})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.sleep(interval_s)


def merge(pulses: list[Any]) -> dict[str, dict[str, Any]]:
    """Pulses of several owners as one view per run (latest ``last``, oldest call)."""
    out: dict[str, dict[str, Any]] = {}
    for raw in pulses:
        runs = raw.get("runs") if isinstance(raw, dict) else None
        if not isinstance(runs, dict):
            continue
        for run, p in runs.items():
            if not isinstance(p, dict):
                continue
            cur = out.setdefault(run, {"last": 0.0, "inflight": 0, "oldest": None})
            cur["last"] = max(cur["last"], float(p.get("last") or 0))
            n = int(p.get("inflight") or 0)
            cur["inflight"] += n
            oldest = p.get("oldest")
            if n and oldest is not None:
                cur["oldest"] = (
                    float(oldest) if cur["oldest"] is None else min(cur["oldest"], float(oldest))
                )
    return out
