"""The one map from Dapr transport errors to ours: an unreachable sidecar is a 503 at
the API and a retryable error inside activities (no stack: the port is closed)."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from swarmd.api.app import create_app
from swarmd.config import Settings
from swarmd.engine.dapr import DaprClient
from swarmd.engine.retry import NON_RETRYABLE
from swarmd.errors import DependencyUnavailable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_sidecar_is_dependency_unavailable_and_retried() -> None:
    dapr = DaprClient(closed_port(), "statestore", timeout_s=2)
    try:
        for call in (dapr.get_value("k"), dapr.put("k", "v"), dapr.delete("k")):
            with pytest.raises(DependencyUnavailable) as err:
                await call
            assert err.value.status_code == 503
            assert type(err.value).__name__ not in NON_RETRYABLE  # activities retry it
    finally:
        await dapr.close()


def test_state_store_outage_is_503_at_the_api() -> None:
    settings = Settings(api_token=SecretStr("t"), DAPR_HTTP_PORT=closed_port())  # type: ignore[call-arg]
    with TestClient(create_app(settings, start_engine=False)) as c:
        r = c.get("/v1/usage/users/alice", headers={"Authorization": "Bearer t"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "dependency_unavailable"
