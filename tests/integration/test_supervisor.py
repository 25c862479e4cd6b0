"""The run supervisor on the real stack: a wedged run is revived within its threshold;
runs that wait for a person or for a slow model are left alone.

The wedge is the one the chaos suite found (docs/reliability.md): daprd SIGKILLed
while a parent creates its children. The restarted daprd re-runs the parent, which
re-creates children while those deliver their results to it, each under its own
actor lock; nothing moves again, and neither events nor a daprd restart help.

Engine v2 creates no child workflows for pattern runs (agents run in group
activities), so the wedge is forced on engine v1 (``SWARMD_ENGINE_VERSION=1``), which
stays supported: runs in flight during an upgrade finish on it, and it is the
rollback. A user agent's turn is still a child workflow on v2, but one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from swarmd.devstack.launcher import Ports, Stack, running
from tests.conftest import TEST_OFFSET, wait_run, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: short thresholds, so the tests stay fast (production default: 90 s)
STALL_S = 8
INTERVAL_S = 1
AGENTS = 40
#: daprd kills during child creation before giving up; about one in three wedges
#: (docs/reliability.md: 10 in 30), so 12 miss all with a chance below 1%
ATTEMPTS = 12
#: the moments of the kill after the planner's answer: mid child creation
KILL_AFTER_S = (0.1, 0.15, 0.2, 0.12, 0.17)


@pytest.fixture(scope="module")
def sv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = {
        "SWARMD_STALL_AFTER_S": str(STALL_S),
        "SWARMD_SUPERVISOR_INTERVAL_S": str(INTERVAL_S),
        # a wedged run needs a fresh generation: nudges do not reach it
        "SWARMD_FRESH_GENERATION": "always",
    }
    with running(
        Stack(
            data_dir=tmp_path_factory.mktemp("supervisor"),
            ports=Ports.for_tests(TEST_OFFSET + 400),  # a block of its own beside the session's
            app_mode="direct",
            app_env=settings,
        )
    ) as s:
        yield s


@pytest.fixture
def api(sv: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sv.api_url, headers={"Authorization": f"Bearer {sv.api_token}"}, timeout=30
    ) as c:
        yield c


def revivals(api: httpx.Client, run_id: str | None = None) -> list[dict[str, Any]]:
    params = {"run_id": run_id} if run_id else {}
    r = api.get("/v1/revivals", params=params)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["revivals"]
    return out


def fan_out(run_id: str, task: str) -> dict[str, Any]:
    return {
        "swarm": "scatter_gather",
        "run_id": run_id,
        "input": {"task": task, "agents": AGENTS, "max_parallel": AGENTS, "user": run_id},
    }


def essence(view: dict[str, Any]) -> Any:
    out = view["output"]
    return out["answer"], [(a["agent"], a["content"]) for a in out["agent_results"]]


@pytest.fixture
def engine_v1(sv: Stack) -> Iterator[Stack]:
    """The stack's app on engine v1 (every agent a child workflow) for one test."""
    sv.app_env["SWARMD_ENGINE_VERSION"] = "1"
    sv.kill("app", sig=15)
    sv.restart_app()
    try:
        yield sv
    finally:
        # back on v2, on a fresh daprd: the wedged generation's actors (its parent and
        # the children still delivering to it) stay locked until daprd restarts, and
        # calls into them hold daprd's resources (a run start hung 30 s after a revival)
        sv.app_env.pop("SWARMD_ENGINE_VERSION", None)
        sv.kill("app", sig=15)
        sv.kill("daprd")
        sv.start_daprd()
        sv.restart_app()


def test_a_run_wedged_by_a_daprd_kill_during_child_creation_is_revived(
    engine_v1: Stack, api: httpx.Client
) -> None:
    sv = engine_v1
    task = "Plan the migration of a payments ledger"
    assert api.post("/v1/runs", json=fan_out("sv-reference", task)).status_code == 202
    reference = essence(wait_run(api, "sv-reference"))

    revived: list[dict[str, Any]] = []
    for i in range(ATTEMPTS):
        run_id = f"sv-wedge-{i}"
        assert api.post("/v1/runs", json=fan_out(run_id, task)).status_code == 202
        # the planner's answer is in: the parent is about to create its 40 children
        wait_until(
            lambda rid=run_id: any(c.get("user") == rid for c in sv.model_calls(status=200)),
            60,
            "the planner's answer",
        )
        time.sleep(KILL_AFTER_S[i % len(KILL_AFTER_S)])  # the moment of the kill
        sv.kill("daprd")
        sv.restart("daprd")
        view = wait_run(api, run_id, timeout_s=120)
        assert view["status"] == "completed", view
        assert view["run_id"] == run_id  # the user's run id, whatever generation ran it
        assert essence(view) == reference, f"{run_id}: output differs from the undisturbed run"
        got = revivals(api, run_id)
        print(f"{run_id}: {len(got)} revivals")
        if got:
            revived.append({"run_id": run_id, **got[-1]})
            break
    assert revived, (
        f"no run wedged in {ATTEMPTS} daprd kills during child creation (each completed "
        "with the undisturbed output): the wedge was not forced, so the revival is unshown"
    )
    r = revived[0]
    assert r["action"] == "fresh_generation" and r["outcome"] == "ok", r
    assert r["generation"] == 2
    # revived once past its threshold, and promptly: each 1 s pass takes the leader lock
    # and reads every run from a daprd that has just restarted, so allow a threshold's
    # worth of slow passes (the default threshold is 90 s)
    assert STALL_S <= r["stuck_for_s"] <= 2 * STALL_S, r
    # engine v1 journals no call: its fresh generation pays for its calls again
    # (SWARMD_FRESH_GENERATION=always); a v2 run's would be answered from the journal


def test_runs_waiting_for_approval_for_a_resume_or_for_a_slow_model_are_left_alone(
    sv: Stack, api: httpx.Client
) -> None:
    """The issue's cases at its ratios to the threshold: approval waits 10 minutes
    against the default 90 s threshold (6.7x), here 7x; the run stays paused as long;
    a call takes 60 s against the chaos suite's 40 s threshold (1.5x), here 2x (a
    literal 60 s call would pass the gateway's 45 s per-deployment timeout)."""
    slow_s = 2 * STALL_S  # each model call takes twice the stall threshold
    waits = 7 * STALL_S  # how long the approval and the pause are watched
    with httpx.Client(base_url=sv.model_server_url) as ms:
        ms.put("/_control/faults", json=[{"model": "*", "latency_ms": slow_s * 1000}])
        try:
            one = [{"name": "w", "role": "You write."}]
            gated = {"name": "gated", "pattern": "pipeline", "approval": True, "agents": one}
            plain = {"name": "plain", "pattern": "pipeline", "agents": one}
            two = {
                "name": "two",
                "pattern": "pipeline",
                "agents": [*one, {"name": "e", "role": "E"}],
            }
            runs = {
                "sv-approval": {"spec": gated, "input": {"task": "Draft a memo"}},
                "sv-slow": {"spec": plain, "input": {"task": "Think slowly"}},
                "sv-paused": {"spec": two, "input": {"task": "Pause me"}},
            }
            for run_id, body in runs.items():
                r = api.post("/v1/runs", json={**body, "run_id": run_id})
                assert r.status_code == 202, r.text
            assert api.post("/v1/runs/sv-paused/pause").status_code == 202

            wait_run(api, "sv-slow", timeout_s=120)  # a call of 2x the threshold, untouched
            wait_until(
                lambda: (
                    (api.get("/v1/runs/sv-approval").json()["progress"] or {}).get("phase")
                    == "awaiting_approval"
                ),
                120,
                "the approval gate",
            )
            # the supervisor looked for well over the threshold while both waited
            since = time.time()
            wait_until(
                lambda: (
                    (api.get("/v1/revivals").json()["supervisor"]["last_pass"] or 0) > since + waits
                ),
                waits + 10 * STALL_S,
                "supervisor passes",
            )
        finally:
            ms.put("/_control/faults", json=[])
    assert api.get("/v1/runs/sv-paused").json()["status"] == "suspended"
    for run_id in runs:
        assert revivals(api, run_id) == [], run_id
    assert api.post("/v1/runs/sv-approval/events/approval", json={"approved": True}).is_success
    assert api.post("/v1/runs/sv-paused/resume").status_code == 202
    for run_id in ("sv-approval", "sv-paused", "sv-slow"):
        assert wait_run(api, run_id, timeout_s=120)["status"] == "completed"
        assert revivals(api, run_id) == [], run_id
