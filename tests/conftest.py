"""Shared fixtures. Integration tests run the real local stack (daprd, placement,
scheduler, LiteLLM proxy, our model server, the app); nothing is mocked."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from swarmd.devstack.launcher import Ports, Stack

TERMINAL = {"completed", "failed", "terminated"}
#: Port offset of the test stacks (the session stack; other stacks add to it), so
#: several checkouts or a running `make run` can coexist: SWARMD_TEST_PORT_OFFSET.
TEST_OFFSET = int(os.environ.get("SWARMD_TEST_PORT_OFFSET", "1000"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the session, app and daprd as direct processes (crash tests kill them)."""
    s = Stack(
        data_dir=tmp_path_factory.mktemp("stack"),
        ports=Ports.for_tests(TEST_OFFSET),
        app_mode="direct",
        # run streams: keep-alives show in tests; catalog pages fill after 4 runs, so every
        # run list crosses pages; test_state_and_tools.py fetches from 127.0.0.1
        app_env={
            "SWARMD_SSE_KEEPALIVE_S": "0.5",
            "SWARMD_CATALOG_PAGE_SIZE": "4",
            "SWARMD_HTTP_GET_ALLOWED_HOSTS": "127.0.0.1",
            "SWARMD_PAYLOAD_TTL_S": "86400",
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as c:
        yield c


@pytest.fixture
def model_server(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.model_server_url, timeout=10) as c:
        yield c
        c.put("/_control/faults", json=[])  # never leak injected faults into the next test


@pytest.fixture
def calls_since(stack: Stack) -> Callable[..., Callable[[], list[dict[str, Any]]]]:
    """``mark = calls_since(); ...; mark()`` -> model-server calls answered after the mark.

    ``calls_since(user="t-x")`` keeps only calls made for runs started with that
    ``input.user`` (the gateway forwards it upstream), so calls still answered for an
    earlier test's runs never leak into a count."""

    def mark(user: str | None = None) -> Callable[[], list[dict[str, Any]]]:
        n = len(stack.model_calls(status=None))
        return lambda: [
            c for c in stack.model_calls(status=None)[n:] if user is None or c.get("user") == user
        ]

    return mark


def wait_run(api: httpx.Client, run_id: str, timeout_s: float = 300) -> dict[str, Any]:
    """Poll a run until it ends (the API's own status endpoint, no sleeps as readiness)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = api.get(f"/v1/runs/{run_id}")
        assert r.status_code == 200, r.text
        view: dict[str, Any] = r.json()
        if view["status"] in TERMINAL:
            return view
        assert time.monotonic() < deadline, f"run {run_id} still {view['status']}: {view}"
        time.sleep(0.25)


def wait_until(pred: Callable[[], Any], timeout_s: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


ROOT = Path(__file__).resolve().parent.parent
