"""Delivery of a user's workflow ``wake`` event, at least once while this process lives.

The fast path (:mod:`swarmd.agents.fastpath`) and the API raise ``wake`` after a
write the workflow must see: a message stored under a lease taken here, a schedule
changed, a fast path that handed its user over. The workflow may be idle with no
timer pending, waiting for exactly that event: a wake that is lost leaves the
message ``queued`` until the user writes again.

So :class:`Waker` never drops a wake on a passing failure (the sidecar restarting,
the actor runtime not placed yet, a timeout). It tries once in the caller's path;
if that fails it keeps the user in a pending set and a background task tries again
with backoff (capped at ``RETRY_MAX_S``) until the event is raised, or until it
reads that the workflow does not exist or has ended (its next start sweeps
anyway). Wakes of one user that are pending together are one delivery: the
workflow reads the whole inbox when it sweeps.

Invariant: a call to :meth:`Waker.wake` returns only after the event was raised or
the user was put in the pending set; the set is emptied only by a delivery or by a
read that the workflow is absent or ended. A process that dies with wakes pending
loses them: the window is a sidecar outage followed by this process's death
before the sidecar came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import grpc
from dapr.ext.workflow.aio import DaprWorkflowClient

from swarmd.agents.store import instance_id
from swarmd.engine.status import ENDED

log = logging.getLogger(__name__)

#: the longest pause between two tries of a pending wake
RETRY_MAX_S = 5.0
#: the first pause
RETRY_FIRST_S = 0.25


class Waker:
    """One per process: raises ``event`` on users' workflows, retrying what failed."""

    def __init__(self, client: DaprWorkflowClient, event: str) -> None:
        self.client = client
        self.event = event
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> frozenset[str]:
        """Users whose wake is not delivered yet."""
        return frozenset(self._pending)

    async def wake(self, user: str) -> None:
        """Raise the wake now; if that fails, keep it pending and return."""
        if user not in self._pending and await self._raise(user):
            return
        self._pending.add(user)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._retry())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _raise(self, user: str) -> bool:
        """True once the workflow has the event or needs none (absent or ended)."""
        iid = instance_id(user)
        try:
            await self.client.raise_workflow_event(iid, self.event, data=None)
            return True
        except grpc.RpcError as exc:
            failed = exc
        with contextlib.suppress(grpc.RpcError):  # refused: is there no workflow to wake?
            st = await self.client.get_workflow_state(iid, fetch_payloads=False)
            if st is None or st.runtime_status in ENDED:
                return True
        log.warning(
            "wake of %s not delivered, trying again: %s", user, failed, extra={"user": user}
        )
        return False

    async def _retry(self) -> None:
        pause = RETRY_FIRST_S
        while self._pending:
            await asyncio.sleep(pause * random.uniform(0.5, 1))
            for user in sorted(self._pending):
                if await self._raise(user):
                    self._pending.discard(user)
            pause = min(RETRY_MAX_S, pause * 2)
