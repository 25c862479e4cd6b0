"""SIGKILL the app, its daprd or the scheduler mid-run: the run resumes at the step it
was in, finishes with the same output as an undisturbed run, and no LLM call that had
completed before the kill is answered twice (only calls in flight may repeat).

The scheduler case is the one engine v1 lost: killing it lost activity completions,
and Dapr re-ran those activities ~24 s later, paying again for calls that had been
answered. Engine v2's call journal answers such re-runs from the state store."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from swarmd.devstack.launcher import Stack
from tests.conftest import wait_run, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TASK = "Evaluate strategies for durable execution of LLM agent swarms"
AGENTS = 50
LATENCY_MS = 400
#: a call answered this long before the kill had time to be recorded by the sidecar
SETTLE_S = 1.0


def body(run_id: str, user: str | None = None) -> dict[str, Any]:
    return {
        "swarm": "scatter_gather",
        "run_id": run_id,
        "input": {"task": TASK, "agents": AGENTS, "max_parallel": 10, "user": user},
    }


def essence(view: dict[str, Any]) -> dict[str, Any]:
    out = view["output"]
    return {
        "answer": out["answer"],
        "agents": [(a["agent"], a["status"], a["content"]) for a in out["agent_results"]],
    }


@pytest.fixture(scope="module")
def slow_model(stack: Stack) -> Iterator[None]:
    with httpx.Client(base_url=stack.model_server_url) as c:
        c.put("/_control/faults", json=[{"model": "*", "latency_ms": LATENCY_MS}])
        yield
        c.put("/_control/faults", json=[])


@pytest.fixture(scope="module")
def reference(stack: Stack, slow_model: None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api:
        assert api.post("/v1/runs", json=body("crash-reference")).status_code == 202
        view = wait_run(api, "crash-reference")
    assert view["status"] == "completed"
    return essence(view)


@pytest.fixture
def healthy_stack(stack: Stack) -> Iterator[Stack]:
    yield stack
    # whatever happened in the test, leave the session stack whole for the next one
    if stack.procs["scheduler"].popen.poll() is not None:
        stack.start_scheduler()
    if stack.procs["daprd"].popen.poll() is not None:
        stack.start_daprd()
    if stack.procs["app"].popen.poll() is not None:
        stack.start_app_process()
    stack.wait_app_ready(stack.procs["app"])


def _phase(api: httpx.Client, run_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/runs/{run_id}")
    return r.json() if r.status_code == 200 else {}


KILL_POINTS = {
    "planner": lambda v: (v.get("progress") or {}).get("phase") == "planning",
    "fanout": lambda v: (v.get("progress") or {}).get("agents_done", 0) >= 20,
    "reducer": lambda v: (v.get("progress") or {}).get("phase") == "reducing",
}


@pytest.mark.parametrize("target", ["app", "daprd", "scheduler"])
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_mid_run_resumes_without_paying_twice(
    healthy_stack: Stack,
    api: httpx.Client,
    calls_since: Any,
    reference: dict[str, Any],
    slow_model: None,
    target: str,
    point: str,
) -> None:
    stack = healthy_stack
    run_id = f"crash-{target}-{point}"
    calls = calls_since(user=run_id)  # the user id tags this run's calls in the model log
    assert api.post("/v1/runs", json=body(run_id, user=run_id)).status_code == 202

    wait_until(
        lambda: KILL_POINTS[point](_phase(api, run_id)), timeout_s=120, what=f"run to reach {point}"
    )
    leading = stack.scheduler_leases() if target == "scheduler" else set()
    kill_ts = time.time()
    stack.kill(target)  # SIGKILL: nothing in the process runs
    print(f"\nSIGKILLed {target} at {point}")
    if target == "app":
        stack.restart_app()
    elif target == "scheduler":
        # the dead process's leadership lease, revoked for it: the new scheduler leads at
        # once instead of after the lease's 20 s (no reminder fires until it leads)
        assert stack.restart_scheduler() == sorted(leading)
        assert stack.scheduler_leases().isdisjoint(leading)
    else:
        stack.restart_daprd()
    t_restart = time.time()

    view = wait_run(api, run_id, timeout_s=300)
    print(f"run completed {time.time() - t_restart:.1f}s after the restart")
    assert view["status"] == "completed", view
    assert essence(view) == reference

    answered = [c for c in calls() if c["status"] == 200]
    counts = Counter(c["messages_sha256"] for c in answered)
    first_ts: dict[str, float] = {}
    for c in answered:  # when it was answered: the log's ts is when the call arrived
        first_ts.setdefault(c["messages_sha256"], c["ts"] + c.get("latency_ms", 0) / 1000)
    settled = {h for h, ts in first_ts.items() if ts < kill_ts - SETTLE_S}
    paid_twice = {h: n for h, n in counts.items() if n > 1 and h in settled}
    assert not paid_twice, f"calls completed before the kill were answered again: {paid_twice}"
    repeated = sum(n - 1 for n in counts.values())
    print(
        f"{len(answered)} answered calls for {len(counts)} distinct prompts; "
        f"{repeated} repeats (in flight at the kill)"
    )
    assert len(counts) == AGENTS + 2
    # one crash repeats a call at most once: only steps unrecorded at the kill run again
    # (those in flight, up to max_parallel, plus any answered in the last moment before
    # daprd could record it; the paid-twice check above bounds them to that window)
    assert max(counts.values()) <= 2, counts
