"""Terminate and pause reach the agents that run inside a group activity.

Dapr never cancels a running activity: when its workflow is terminated the
activity runs to its end and its result is dropped; when the workflow is
suspended the result waits in its inbox. Engine v1's agents were child
workflows, which a recursive terminate stops. Engine v2 runs up to 100 agents
inside one ``swarmd.run_agents`` activity, which, left alone, would go on
paying for every agent of a terminated run and keep calling the model while
the run is paused. So a group asks before each agent starts
(:meth:`RunGate.wait_open`):

* the workflow is ``TERMINATED``: False, and the group starts nothing more;
* ``SUSPENDED``: wait, reading the status again every ``interval_s``, until it
  runs again (True) or is terminated (False);
* anything else: True at once.

and before each later turn of an agent that has started (:meth:`RunGate.ended`):
terminated, the agent stops; paused, its turns go on (it holds one of the
process's agent places, which a pause must not keep from other runs).

Invariants:

* A control read never holds work back: a status that cannot be read (daprd
  restarting, placement down, the store down) counts as running, and a slow one
  is not waited out: the first read of a run at most ``first_wait_s``, a refresh
  at most ``refresh_wait_s``, after which the last status answers while the read
  goes on.
* One status read per workflow instance per ``interval_s`` in a process, however
  many groups and agents ask (cached, single flight). So a terminate or a pause
  is seen within about ``interval_s`` (plus the read); calls already in flight
  finish.
* Generations of a revived run have instance ids of their own, so a cached status
  never crosses from one generation to the next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from swarmd.errors import ActivityError, DependencyUnavailable

#: a workflow instance id -> its runtime status (None: no such instance)
StatusOf = Callable[[str], Awaitable[str | None]]

ENDED = "TERMINATED"
PAUSED = "SUSPENDED"
#: instances whose status is remembered (the oldest are forgotten first)
CACHE_MAX = 4096


class RunGate:
    def __init__(
        self,
        status_of: StatusOf,
        interval_s: float = 0.5,
        first_wait_s: float = 1.0,
        refresh_wait_s: float = 0.2,
    ) -> None:
        self.status_of = status_of
        self.interval_s = interval_s
        self.first_wait_s = first_wait_s
        self.refresh_wait_s = refresh_wait_s
        #: instance -> (status, when read)
        self._seen: dict[str, tuple[str | None, float]] = {}
        #: the read in flight, per event loop (a future belongs to its loop)
        self._reading: dict[tuple[int, str], asyncio.Future[str | None]] = {}

    async def wait_open(self, instance_id: str) -> bool:
        """True when work for ``instance_id`` may go on (after waiting out a pause),
        False once its workflow is terminated."""
        while True:
            status = await self._status(instance_id)
            if status == ENDED:
                return False
            if status != PAUSED:
                return True
            await asyncio.sleep(self.interval_s)

    async def ended(self, instance_id: str) -> bool:
        """True once the workflow of ``instance_id`` is terminated (a pause is not
        waited out here: for work that already started and holds resources)."""
        return await self._status(instance_id) == ENDED

    async def _status(self, instance_id: str) -> str | None:
        seen = self._seen.get(instance_id)
        if seen is not None and time.monotonic() - seen[1] < self.interval_s:
            return seen[0]
        slot = (id(asyncio.get_running_loop()), instance_id)
        reading = self._reading.get(slot)
        if reading is None:
            reading = asyncio.ensure_future(self._read(slot))
            self._reading[slot] = reading
        # a read takes milliseconds; one that takes longer (an outage) is not waited
        # for: the last status answers (none yet: running) while it goes on
        wait_s = self.first_wait_s if seen is None else self.refresh_wait_s
        try:
            return await asyncio.wait_for(asyncio.shield(reading), wait_s)
        except TimeoutError:
            return seen[0] if seen is not None else None

    async def _read(self, slot: tuple[int, str]) -> str | None:
        try:
            status = await self.status_of(slot[1])
        except (DependencyUnavailable, ActivityError, ValueError):
            status = None  # unknown (unreachable, refused, not JSON) counts as running
        finally:
            self._reading.pop(slot, None)
        self._seen.pop(slot[1], None)  # re-inserted last: the oldest reads go first
        self._seen[slot[1]] = (status, time.monotonic())
        while len(self._seen) > CACHE_MAX:
            del self._seen[next(iter(self._seen))]
        return status
