"""``swarmd.call_llm`` waits out a gateway it cannot reach instead of failing the call.

The chaos suite lost planner, supervisor and user-agent calls to a LiteLLM restart
that outlasted the run's retry budget (~31 s): those calls go through
``swarmd.call_llm``, which gave up where the group activities waited. Here the
real ``openai`` client talks to the real model server app through a transport
that refuses connections while the "gateway" is down.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import openai
import pytest
from openai import AsyncOpenAI, DefaultAioHttpClient

from swarmd.activities import llm
from swarmd.devstack.modelserver import ModelServer
from swarmd.engine.models import LLMRequest
from swarmd.errors import GatewayUnreachable, RetryableActivityError


class Gateway(httpx.AsyncBaseTransport):
    """The model server, refusing connections for its first ``down_for`` requests."""

    def __init__(self, server: ModelServer, down_for: int) -> None:
        self.inner = httpx.ASGITransport(app=server.app())
        self.down_for = down_for
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.requests <= self.down_for:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


def client(gw: Gateway) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url="http://gateway/v1",
        api_key="k",
        max_retries=0,  # as the app's client: the engine owns retries
        http_client=httpx.AsyncClient(transport=gw),
    )


REQ = LLMRequest(
    run_id="r1",
    agent="planner",
    model="mock-a",
    messages=[{"role": "user", "content": "Plan a migration"}],
    user="u1",
)
CTX = cast(Any, SimpleNamespace(workflow_id="r1"))


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "UNREACHABLE_RETRY_MAX_S", 0.01)


async def test_a_call_waits_out_an_unreachable_gateway_past_the_retry_budget(
    tmp_path: Path,
) -> None:
    server = ModelServer(tmp_path / "req.jsonl")
    gw = Gateway(server, down_for=12)  # twice the run's 6 attempts
    out = await llm.make_call_llm(client(gw))(CTX, REQ)
    assert out["content"]
    assert gw.requests == 13
    # the model answered exactly once: the refused tries never reached it
    assert len((tmp_path / "req.jsonl").read_text().splitlines()) == 1


async def test_an_unreachable_gateway_fails_the_call_after_the_patience() -> None:
    async def refused() -> None:
        raise GatewayUnreachable("gateway unreachable: connection refused")

    with pytest.raises(GatewayUnreachable):
        await llm.past_gateway_outages(refused, patience_s=0.05)


async def test_a_gateway_error_is_left_to_the_run_retry_policy(tmp_path: Path) -> None:
    server = ModelServer(tmp_path / "req.jsonl")
    gw = Gateway(server, down_for=0)
    bad = client(gw)
    faults = httpx.AsyncClient(transport=gw.inner, base_url="http://gateway")
    r = await faults.put("/_control/faults", json=[{"model": "*", "status": 503}])
    assert r.status_code == 200
    with pytest.raises(RetryableActivityError) as err:
        await llm.make_call_llm(bad)(CTX, REQ)
    assert not isinstance(err.value, GatewayUnreachable)
    assert gw.requests == 1  # one try: the workflow's retry policy decides the rest


async def test_a_refused_connection_is_unreachable_with_the_aiohttp_client_too() -> None:
    """openai's aiohttp client reports a refused connection as a connect *timeout*; it
    was never sent all the same, so it is waited out, not failed after ~31 s."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="k",
        max_retries=0,
        http_client=DefaultAioHttpClient(),
    )
    async with c:
        with pytest.raises(openai.APIError) as err:
            await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert isinstance(llm.classify(err.value), GatewayUnreachable)
