"""Safe upgrades: a run in flight keeps its workflow version across a deploy."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from swarmd.devstack.launcher import ROOT, Stack
from tests.conftest import wait_run, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def deploy(stack: Stack, plugins: list[str]) -> None:
    """Replace the app process with one running other workflow code (a deploy)."""
    stack.kill("app", sig=15)  # graceful: SIGTERM, as a rolling update does
    if plugins:
        stack.app_env.update(SWARMD_PLUGINS=json.dumps(plugins), PYTHONPATH=str(ROOT))
    else:
        stack.app_env.pop("SWARMD_PLUGINS", None)
        stack.app_env.pop("PYTHONPATH", None)
    stack.restart_app()


@pytest.fixture
def plugin_stack(stack: Stack) -> Iterator[Stack]:
    yield stack
    deploy(stack, [])  # back to the plain app for the other tests


def start(stack: Stack, workflow: str, run_id: str) -> None:
    r = httpx.post(
        f"http://127.0.0.1:{stack.ports.dapr_http}/v1.0/workflows/dapr/{workflow}"
        f"/start?instanceID={run_id}",
        json={},
    )
    assert r.status_code < 300, r.text


def go(stack: Stack, run_id: str) -> None:
    r = httpx.post(
        f"http://127.0.0.1:{stack.ports.dapr_http}/v1.0/workflows/dapr/{run_id}/raiseEvent/go",
        json={},
    )
    assert r.status_code < 300, r.text


def waiting(api: httpx.Client, run_id: str) -> bool:
    view: dict[str, Any] = api.get(f"/v1/runs/{run_id}").json()
    return (view.get("progress") or {}).get("phase") == "waiting-for-go"


def test_in_flight_run_finishes_on_its_version_across_a_deploy(
    plugin_stack: Stack, api: httpx.Client
) -> None:
    stack = plugin_stack
    deploy(stack, ["tests.plugins.upgrade_v1"])  # deploy A
    start(stack, "test.upgrade", "upgrade-old")
    start(stack, "test.upgrade-unversioned", "upgrade-control")
    wait_until(
        lambda: waiting(api, "upgrade-old") and waiting(api, "upgrade-control"),
        what="both runs to wait for 'go'",
    )

    deploy(stack, ["tests.plugins.upgrade_v2"])  # deploy B: v2 inserts a new first step
    go(stack, "upgrade-old")
    go(stack, "upgrade-control")

    old = wait_run(api, "upgrade-old", timeout_s=120)
    assert old["status"] == "completed", old
    assert old["output"]["version"] == "v1" and len(old["output"]["answers"]) == 2

    # new runs get the new version
    start(stack, "test.upgrade", "upgrade-new")
    wait_until(lambda: waiting(api, "upgrade-new"), what="the v2 run to wait for 'go'")
    go(stack, "upgrade-new")
    new = wait_run(api, "upgrade-new", timeout_s=120)
    assert new["output"]["version"] == "v2" and len(new["output"]["answers"]) == 3

    # the control: the same change without versions corrupts the run in flight. Replay
    # matches history by activity name only, so v2's new preflight step silently takes
    # the result recorded for v1's step one, and every later step shifts by one.
    control = wait_run(api, "upgrade-control", timeout_s=120)
    print(f"\nunversioned control: {control['status']}, {control['output']}")
    assert control["output"]["version"] == "v2"
    preflight_answer = control["output"]["answers"][0]
    assert "upgrade step one" in preflight_answer  # not the preflight's own answer


def redeploy(stack: Stack, user_agent_version: str) -> None:
    """A deploy whose new user-agent generations run ``user_agent_version``."""
    stack.kill("app", sig=15)
    stack.app_env["SWARMD_USER_AGENT_VERSION"] = user_agent_version
    stack.restart_app()
    stack.wait_app_ready(stack.procs["app"])


@pytest.fixture
def v1_stack(stack: Stack) -> Iterator[Stack]:
    redeploy(stack, "v1")
    yield stack
    redeploy(stack, "v3")  # the default, for the others
    stack.app_env.pop("SWARMD_USER_AGENT_VERSION", None)


def test_a_user_agent_started_on_v1_keeps_working_after_the_upgrade(
    v1_stack: Stack, api: httpx.Client, model_server: httpx.Client, calls_since: Any
) -> None:
    stack = v1_stack
    user = f"upg-{uuid.uuid4().hex[:8]}"
    r = api.post("/v1/agents", json={"user_id": user, "template": "manager"})
    assert r.status_code == 201, r.text

    def send(text: str) -> str:
        r = api.post(f"/v1/agents/{user}/messages", json={"text": text})
        assert r.status_code == 202, r.text
        return str(r.json()["message_id"])

    def answered(mid: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            m: dict[str, Any] = api.get(
                f"/v1/agents/{user}/messages/{mid}", params={"wait_s": 5}
            ).json()
            return m if m["status"] in ("answered", "failed") else None

        msg: dict[str, Any] = wait_until(done, timeout_s=120, what=f"reply to {mid}")
        assert msg["status"] == "answered", msg
        return msg

    answered(send("first, on v1"))
    # v1 runs each turn's agent loop as a child workflow: that is how we know it ran v1
    assert api.get(f"/v1/runs/user-agent-{user}.t1").status_code == 200

    model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 2000}])
    mid = send("second, in flight across the upgrade")
    wait_until(
        lambda: api.get(f"/v1/agents/{user}/messages/{mid}").json()["status"] == "running",
        what="the v1 turn to start",
    )
    redeploy(stack, "v3")  # the deploy: v3 (and its fast path) is what new generations run
    model_server.put("/_control/faults", json=[])
    answered(mid)  # finished by its v1 generation (its agent-loop child is there)
    assert api.get(f"/v1/runs/user-agent-{user}.t2").status_code == 200

    # the killed v1 process's call for the second message may still be answered by the
    # model server after this mark (the gateway does not cancel it): count only calls
    # the model server was asked after the mark
    t0, calls = time.time(), calls_since(user=user)
    third = answered(send("third, on v3"))
    assert api.get(f"/v1/runs/user-agent-{user}.t3").status_code == 404  # no child on v2
    asked = [c for c in calls() if c["status"] == 200 and c["ts"] >= t0]
    assert len(asked) == 1, asked  # one model call, once
    usage = api.get(f"/v1/agents/{user}/usage").json()["today"]
    assert usage["messages"] == 3 and third["reply"]
    mem = api.get(f"/v1/agents/{user}/memory").json()["memory"]
    assert [m["content"] for m in mem if m["role"] == "user"] == [
        "first, on v1",
        "second, in flight across the upgrade",
        "third, on v3",
    ]
    report = api.delete(f"/v1/agents/{user}").json()
    assert report["clean"] is True, report
