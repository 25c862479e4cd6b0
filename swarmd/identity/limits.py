"""Fair sharing: per-user limits, cluster-wide (state in the Dapr state store).

* **Start rate**: a generic cell-rate algorithm (a token bucket kept as one
  timestamp) per user: ``user_starts_per_minute`` sustained, ``user_start_burst`` at
  once. A start is a run (``POST /v1/runs``) or an agent message (a turn). One key
  per user, ``swarmd-rate|<user>``, updated with its ETag, so replicas share it.
* **In flight**: ``user_max_runs`` runs (counted in the run tracker's index, in the
  same ETag-guarded write that adds the run, see
  :meth:`swarmd.engine.tracker.RunTracker.started`) and ``user_max_turns`` agent
  messages queued or running (:func:`turns_in_flight`).

Every refusal is :class:`~swarmd.errors.TooManyRequests` (429 with Retry-After).
Operators are exempt. Scheduling between users is fair by construction: a user's
agent answers one message at a time, so a user with a long queue holds one turn's
worth of the workers, like every other user with something to say, and at most
``user_max_runs`` runs.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from swarmd.config import Settings
from swarmd.engine.dapr import DaprClient
from swarmd.errors import TooManyRequests

_Locks = weakref.WeakValueDictionary[str, asyncio.Lock]
#: message statuses after which a message holds no turn
FINAL = frozenset({"answered", "failed", "budget_exhausted"})


def _rate_key(user: str) -> str:
    return f"swarmd-rate|{user}"


class StartRate:
    """One user's starts are counted one at a time in this process (a lock per user
    with starts in progress), so only other replicas' writes can make its ETag
    check fail and retry."""

    def __init__(self, state: DaprClient, settings: Settings) -> None:
        self.state = state
        self.interval = 60.0 / settings.user_starts_per_minute
        self.tolerance = self.interval * (settings.user_start_burst - 1)
        self.clock: Callable[[], float] = time.time
        #: user -> its lock, while a start of that user is in progress
        self._locks: _Locks = weakref.WeakValueDictionary()

    async def take(self, user: str) -> None:
        """Count one start of ``user``, or raise 429 if it is above its rate."""
        async with self.starting(user):
            pass

    @asynccontextmanager
    async def starting(self, user: str) -> AsyncIterator[None]:
        """Count one start of ``user`` (429 above its rate), then run the block while
        no other start of this user runs in this process: an in-flight check and the
        write it guards (a message into the inbox) are then exact per replica."""
        lock = self._locks.get(user)
        if lock is None:
            lock = self._locks[user] = asyncio.Lock()
        async with lock:
            await self._take(user)
            yield

    async def _take(self, user: str) -> None:
        now = 0.0

        def take(value: Any) -> dict[str, float]:
            nonlocal now
            now = self.clock()
            stored = float(value.get("tat", 0)) if isinstance(value, dict) else 0.0
            tat = max(stored, now)
            wait = tat - now - self.tolerance
            if wait > 0:
                burst = round(self.tolerance / self.interval) + 1
                raise TooManyRequests(
                    f"user {user!r} starts too fast: at most "
                    f"{60 / self.interval:g} per minute (burst {burst})",
                    retry_after_s=wait,
                    limit="start_rate",
                )
            return {"tat": tat + self.interval}

        await self.state.update(
            _rate_key(user),
            take,
            ttl_of=lambda new: math.ceil(new["tat"] - now) + 60,
            what=f"the start rate of {user!r}",
        )


async def turns_in_flight(
    seq: int, read: Callable[[int], Awaitable[dict[str, Any] | None]], limit: int
) -> int:
    """How many of the last messages (1..``seq``) are not final, counting at most
    ``limit``. Messages are answered strictly in order, so the unanswered ones are
    the newest: this reads at most ``limit`` messages, from the newest down."""
    n = 0
    for i in range(seq, max(0, seq - limit), -1):
        msg = await read(i)
        if msg is not None and msg.get("status") in FINAL:
            break
        n += 1
    return n
