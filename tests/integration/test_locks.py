"""Locks in the product, on the real stack: memory_write's append under a per-key lock."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from swarmd.activities.tools import ToolDeps, memory_key, run_tool
from swarmd.devstack.launcher import Stack
from swarmd.engine.dapr import DaprClient
from swarmd.engine.locks import LockManager
from swarmd.engine.models import ToolRequest
from swarmd.engine.registry import OwnerRegistry, holds_key

pytestmark = pytest.mark.integration


async def test_concurrent_memory_appends_lose_no_line(stack: Stack) -> None:
    # one sidecar client for all, as the app has
    state = DaprClient(stack.ports.dapr_http, "statestore")
    registry = OwnerRegistry(state, pod="test-memory", ttl_s=4)
    await registry.start()
    locks = LockManager(state, registry, "lockstore")
    try:
        async with httpx.AsyncClient() as http:
            deps = ToolDeps(
                http=http,
                allowed_hosts=frozenset(),
                state_get=state.get_text,
                state_put=state.put_text,
                lock=locks.hold,
            )
            req = ToolRequest(
                run_id="r",
                agent="agent-1",
                name="memory_write",
                arguments="{}",
                allowed=["memory_write"],
                user=f"user-{time.monotonic_ns()}",
            )
            lines = [f"line {i}" for i in range(12)]
            results = await asyncio.gather(
                *(run_tool(deps, req, {"key": "notes", "value": v, "append": True}) for v in lines)
            )
        assert all(r == {"ok": True, "appended": True} for r in results)
        stored = await state.get_text(memory_key(req, "notes"))
        assert stored is not None and sorted(stored.split("\n")) == sorted(lines)
        # every lock was released and forgotten by the owner registry
        assert locks.held() == []
        holds = await state.get(holds_key(registry.owner))
        assert holds.value is not None and holds.value["locks"] == {}
    finally:
        await locks.release_all()
        await registry.stop()
        await state.close()
