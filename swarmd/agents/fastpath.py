"""The fast path of workflow v3: a message is answered in the app as it arrives.

``POST /v1/agents/{u}/messages`` stores the message and, in the same transaction,
takes (or extends) the user's turn lease for this process
(:mod:`swarmd.agents.lease`); then :meth:`FastPath.kick` runs the user's turns
here, on the API's event loop, one message at a time and strictly in order:
each through :class:`swarmd.agents.turn.Turns` (every call journaled, the reply
stored in one transaction with the lease). No workflow step runs per message.

The user's workflow stays the durable owner: taking a lease that was not valid
raises its ``wake`` event, and while a process lease is valid the workflow
sweeps again when it ends. So a message accepted with 202 is answered even if
this process dies (by the workflow, once the lease ran out), never twice (only
the lease holder stores a reply, journaled calls are never made again).

A user's worker lingers ``linger_s`` after its last turn, then frees the lease
(guarded by the inbox counter's ETag, so a message that came meanwhile is
answered first). A failure (the gateway down, the sidecar unreachable) frees the
lease and wakes the workflow, whose retries take over; except at the end of a
turn, which waits out a state store that cannot be reached with its answers in
hand (:class:`swarmd.agents.turn.Answers`), since whoever took over would pay for
the final answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable

from dapr.ext.workflow import WorkflowActivityContext
from dapr.ext.workflow._durabletask.task import ActivityContext

from swarmd.agents.lease import SAFETY_S, Lease
from swarmd.agents.store import instance_id, key
from swarmd.agents.turn import VERSION, Held, TurnResult, Turns
from swarmd.engine.state import Op
from swarmd.errors import RetryableActivityError

log = logging.getLogger(__name__)

Wake = Callable[[str], Awaitable[None]]
#: tries of one turn in the fast path before the user is handed to its workflow
RETRIES = 3


class FastPath:
    """The fast path of this process (one per app process; its lease owner token)."""

    def __init__(self, turns: Turns, wake: Wake, linger_s: float) -> None:
        self.turns = turns
        self.state = turns.state
        self.wake = wake
        self.linger_s = linger_s
        self.owner = f"app-{uuid.uuid4().hex[:16]}"
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._kicks: dict[str, asyncio.Event] = {}

    @property
    def lease_s(self) -> float:
        return self.turns.lease_s

    def kick(self, user: str, done: int) -> None:
        """A message for ``user`` was stored under this process's lease (``done``: the
        lease's last final message then): answer it."""
        ev = self._kicks.setdefault(user, asyncio.Event())
        ev.set()
        if user not in self._workers:
            self._workers[user] = asyncio.create_task(self._run(user, ev, done))

    async def close(self) -> None:
        """Stop every worker; their leases run out and the workflows take over."""
        tasks = list(self._workers.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _run(self, user: str, ev: asyncio.Event, done: int) -> None:
        ctx = WorkflowActivityContext(ActivityContext(instance_id(user), -1))
        try:
            while True:
                ev.clear()  # before the read: a message stored after it kicks again
                res = await self._answer(ctx, user, done)
                if not res.exists or res.lost:
                    return
                if res.seq is not None:
                    done = res.seq
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), self.linger_s)
                if ev.is_set() or not await self._release(user):
                    continue
                if ev.is_set():  # kicked while freeing it: its message may be under a new lease
                    continue
                return  # no await from here to the pop below: a later kick starts a new worker
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure hands the user to the workflow
            log.warning(
                "fast path of %s handed to its workflow: %s", user, exc, extra={"user": user}
            )
            with contextlib.suppress(Exception):
                await self._release(user)
            with contextlib.suppress(Exception):
                await self.wake(user)
        finally:
            self._workers.pop(user, None)
            self._kicks.pop(user, None)

    async def _answer(self, ctx: WorkflowActivityContext, user: str, done: int) -> TurnResult:
        """One turn, tried again on a passing failure (a dropped connection): every call
        is journaled and the reply stored once, so a retry pays nothing twice."""
        for attempt in range(RETRIES):
            try:
                return await self.turns.answer(ctx, user, done, Held(self.owner, Lease(), None))
            except RetryableActivityError:
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def _release(self, user: str) -> bool:
        """Free this process's lease unless a message came since the last read."""
        lkey, ckey = key(user, "lease"), key(user, "seq")
        snap = await self.state.get_many([lkey, ckey])
        le, counter = snap[lkey], snap[ckey]
        lease = Lease.of(le.value)
        if lease.owner != self.owner:
            return True  # not ours any more: nothing to free
        if int(counter.value or 0) > lease.done:
            return False  # a message is waiting: answer it first
        ops = [
            Op(lkey, lease.released().dump(), etag=le.etag),
            Op(ckey, counter.value or 0, etag=counter.etag, create=counter.etag is None),
        ]
        return await self.state.transact(ops)


def accept(fast: FastPath, lease: Lease) -> tuple[Lease | None, bool]:
    """What a new message does to ``lease`` on this process: the lease to write with it
    (None: leave it) and whether the workflow must be woken after the write (for a
    lease taken here, :func:`still_watched` refines that once the write landed)."""
    if lease.watched != VERSION:
        return None, True  # no v3 generation watches yet: its workflow answers
    if lease.owner == fast.owner or not lease.valid():
        return lease.taken(fast.owner, fast.lease_s), True
    return None, False  # another answerer holds it and answers messages after done


def still_watched(fast: FastPath, was: Lease) -> bool:
    """Called after a write that took or extended the lease ``was``: the workflow
    still watches it without a wake. True only if ``was`` was this process's and is,
    now that the write landed, still valid with a margin: the workflow's next sweep
    (``SAFETY_S`` after ``was`` ends) then reads the write."""
    return was.owner == fast.owner and was.left_s() > SAFETY_S
