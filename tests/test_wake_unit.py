"""A wake the sidecar cannot take is kept, not dropped (a real Dapr workflow client
against a port where no sidecar listens)."""

from __future__ import annotations

import asyncio
import socket

from dapr.ext.workflow.aio import DaprWorkflowClient

from swarmd.agents.wake import Waker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_wake_stays_pending_until_closed() -> None:
    async def scenario() -> None:
        waker = Waker(DaprWorkflowClient(host="127.0.0.1", port=str(_free_port())), "wake")
        await waker.wake("alice")
        await waker.wake("alice")  # one delivery per user, however often it is asked
        await waker.wake("bob")
        assert waker.pending == {"alice", "bob"}
        await asyncio.sleep(0.5)  # the background retry meets the same refusal
        assert waker.pending == {"alice", "bob"}
        await waker.close()

    asyncio.run(scenario())
