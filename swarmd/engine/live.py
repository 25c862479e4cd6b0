"""Live progress of agent groups: agents done inside groups still running.

Engine v2 runs agents in group activities (``swarmd.run_agents``), and the
workflow learns of a group's agents only when the whole group completes. So
that a run's progress still moves at least once a second, each process counts
the agents its groups have finished and, every ``interval_s``, merges the
counts into one state key per run, ``live|<run>`` (``{"g": {group: done},
"t": <write time, µs>}``, by compare-and-set on its ETag, counts only ever
grow). The API adds them up; the write time versions the run's event stream.

Invariants:

* Informational only: nothing durable depends on these counts; the workflow's
  own progress (its custom status) is the truth once a group completes, and
  the API shows the larger of the two.
* A lost update (a crash before a flush) only delays the count; a group that
  runs again after a crash counts from its journal, so it never counts an
  agent twice.
* The key is recorded in the run's key index, so purging the run deletes it;
  it also expires (``ttl_s``).
* Nothing is written for a group after its activity returned (:meth:`finish`):
  the workflow then knows the group's count itself, and a flush landing after the
  run ended and was purged re-created its key index (found by CI: a purged run
  kept one index shard).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from swarmd.engine.dapr import DaprClient
from swarmd.engine.runkeys import RunKeys
from swarmd.errors import DependencyUnavailable

log = logging.getLogger("swarmd.engine.live")


def live_key(run_id: str) -> str:
    return f"live|{run_id}"


class LiveProgress:
    def __init__(
        self, sidecar: DaprClient, keys: RunKeys, interval_s: float = 0.5, ttl_s: int = 86_400
    ) -> None:
        self.sc = sidecar
        self.keys = keys
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        #: counts not yet written: run -> group -> agents done
        self._counts: dict[str, dict[str, int]] = {}
        self._indexed: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Future[None] | None = None

    def done(self, run_id: str, group: str, n: int) -> None:
        """Group ``group`` of run ``run_id`` has finished ``n`` agents so far."""
        runs = self._counts.setdefault(run_id, {})
        runs[group] = max(runs.get(group, 0), n)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flusher())

    async def _flusher(self) -> None:
        while self._counts:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def finish(self, run_id: str, group: str) -> None:
        """Group ``group`` returns now: drop its counts not yet written, and wait for a
        flush already under way, so nothing is written for it once it has returned."""
        runs = self._counts.get(run_id)
        if runs is not None:
            runs.pop(group, None)
            if not runs:
                del self._counts[run_id]
        if self._flushing is not None:
            await asyncio.shield(self._flushing)

    async def flush(self) -> None:
        """Merge every count not yet written (kept for the next flush if that fails)."""
        pending, self._counts = self._counts, {}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushing = done
        try:
            for run_id, counts in pending.items():
                try:
                    await self._merge(run_id, counts)
                except DependencyUnavailable:
                    log.debug("live progress of %s not written", run_id, exc_info=True)
                    runs = self._counts.setdefault(run_id, {})
                    for g, n in counts.items():
                        runs[g] = max(runs.get(g, 0), n)
        finally:
            if self._flushing is done:
                self._flushing = None
            done.set_result(None)

    async def _merge(self, run_id: str, counts: dict[str, int]) -> None:
        key = live_key(run_id)
        if run_id not in self._indexed:
            await self.keys.add(run_id, [key])
            self._indexed.add(run_id)
            if len(self._indexed) > 10_000:
                self._indexed.clear()

        def merge(value: Any) -> dict[str, Any] | None:
            have = _groups(value)
            merged = {**have}
            for g, n in counts.items():
                merged[g] = max(have.get(g, 0), n)
            if merged == have:
                return None  # nothing new
            return {"g": merged, "t": int(time.time() * 1_000_000)}

        await self.sc.update(
            key,
            merge,
            ttl_of=lambda _: self.ttl_s,
            attempts=20,
            what=f"live progress of {run_id!r}",
        )

    async def read(self, run_id: str) -> tuple[int, int]:
        """Agents finished in the run's groups so far, by the latest flushes, and when
        that was written (µs since the epoch; 0 when nothing was)."""
        with contextlib.suppress(DependencyUnavailable):
            item = await self.sc.get(live_key(run_id))
            if isinstance(item.value, dict):
                return sum(_groups(item.value).values()), int(item.value.get("t", 0))
        return 0, 0


def _groups(value: Any) -> dict[str, int]:
    g = value.get("g") if isinstance(value, dict) else None
    return {str(k): int(v) for k, v in g.items()} if isinstance(g, dict) else {}
