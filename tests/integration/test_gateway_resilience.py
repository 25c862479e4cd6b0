"""A provider's rate limits and outages do not stall a swarm (real LiteLLM proxy,
real model server with injected faults, real daprd and app)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from swarmd.devstack.launcher import Stack
from tests.conftest import wait_run, wait_until
from tests.integration.test_metrics import metric

pytestmark = pytest.mark.integration


def _answered_once(calls: list[dict[str, Any]]) -> Counter[str]:
    """How often each distinct prompt was answered with 200 (a re-run agent step
    would send the same messages again)."""
    return Counter(c["messages_sha256"] for c in calls if c["status"] == 200)


def _recoveries(api: httpx.Client) -> float:
    """The gateway's retries plus fallbacks for answered calls, as the app counted them."""
    return metric(api, "swarmd_llm_retries_total") + metric(api, "swarmd_llm_fallbacks_total")


def _route_to_mock_a(stack: Stack, model_server: httpx.Client) -> None:
    """Leave the proxy's latency routing preferring mock-a, whatever earlier tests did.

    LiteLLM routes each alias to the deployment with the lowest average of its last
    10 latency samples (per output token; none counts as 0), and gives a deployment
    whose call timed out a 1,000 s sample, so an earlier test's slow call can keep
    routing off mock-a for good. First mock-a refuses (this caller only) while mock-b
    is slow: mock-b's samples become 300 ms ones. Then mock-b refuses: every call is
    answered by mock-a, whose samples become fast ones (a refusal records none)."""
    user = f"t-prime-{uuid.uuid4().hex[:8]}"
    url = f"http://127.0.0.1:{stack.ports.litellm}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {stack.gateway_key}"}
    phases = [
        (
            "mock-b",
            [
                {"model": "mock-a", "user": user, "status": 429},
                {"model": "mock-b", "user": user, "latency_ms": 300},
            ],
        ),
        ("mock-a", [{"model": "mock-b", "user": user, "status": 429}]),
    ]
    with httpx.Client(timeout=60, headers=headers) as gw, ThreadPoolExecutor(2) as pool:
        for answers, faults in phases:
            assert model_server.put("/_control/faults", json=faults).status_code == 200

            def fill(alias: str, answers: str = answers) -> int:
                """Ask until 10 answers came from ``answers``'s deployment of ``alias``
                (model_info.id in gateway/litellm.yaml, in the proxy's response)."""
                want = f"{alias.removeprefix('swarmd-')}-{answers[-1]}"
                got, asked, deadline = 0, 0, time.monotonic() + 60
                while got < 10:
                    assert time.monotonic() < deadline, f"{want}: {got} of 10 answers"
                    msgs = [{"role": "user", "content": f"warm up {want}, call {asked}"}]
                    r = gw.post(url, json={"model": alias, "user": user, "messages": msgs})
                    assert r.status_code == 200, r.text
                    asked += 1
                    if r.headers.get("x-litellm-model-id") == want:
                        got += 1
                    else:  # the deployment is cooling down from the phase before
                        time.sleep(0.2)
                return asked

            assert all(n >= 10 for n in pool.map(fill, ("swarmd-fast", "swarmd-smart")))


def test_429_storm_on_one_deployment_50_agents_complete(
    stack, api, model_server, calls_since
) -> None:
    # mock-a (the first deployment of swarmd-fast and swarmd-smart) rate-limits every
    # call; mock-b is much slower, so latency-based routing keeps preferring mock-a
    # whenever its cooldown ends: the 429s really reach the proxy, again and again.
    # (Routing's samples outlive a test: twice in CI, an earlier test's samples made
    # routing never try mock-a, so the test first makes them fresh.)
    _route_to_mock_a(stack, model_server)
    user = f"t-storm-{uuid.uuid4().hex[:8]}"
    faults = [
        {"model": "mock-a", "user": user, "status": 429, "rate": 1.0},
        {"model": "mock-b", "user": user, "latency_ms": 1000},
    ]
    assert model_server.put("/_control/faults", json=faults).status_code == 200
    recoveries0 = _recoveries(api)
    calls = calls_since(user=user)
    r = api.post(
        "/v1/runs",
        json={
            "swarm": "scatter_gather",
            "input": {
                "task": "Survey rate-limit handling in LLM gateways",
                "agents": 50,
                "user": user,
            },
        },
    )
    assert r.status_code == 202, r.text
    view = wait_run(api, r.json()["run_id"], timeout_s=240)

    assert view["status"] == "completed", view
    out = view["output"]
    assert len(out["agent_results"]) == 50
    assert all(a["status"] == "answered" for a in out["agent_results"]), [
        a for a in out["agent_results"] if a["status"] != "answered"
    ]
    log = calls()
    by_model = Counter((c["model"], c["status"]) for c in log)
    # the model server's own log proves the 429s happened ...
    assert by_model[("mock-a", 429)] >= 1, by_model
    # ... and that every answer came from the other deployment or the backup
    assert by_model[("mock-a", 200)] == 0, by_model
    assert by_model[("mock-b", 200)] + by_model[("mock-backup", 200)] == 52, by_model
    # planner + 50 agents + reducer, each answered exactly once
    answered = _answered_once(log)
    assert len(answered) == 52 and set(answered.values()) == {1}, answered.most_common(3)
    assert out["usage"]["calls"] == 52
    # the app saw, in the proxy's response headers, how it recovered the 429s: a retry
    # on the alias or, when the retry met mock-a again, the fallback alias (the router
    # picks per call, so either may happen; a fallback's headers count no retries)
    assert _recoveries(api) >= recoveries0 + 1
    print(f"429s from mock-a: {by_model[('mock-a', 429)]}; answers: {dict(by_model)}")


def test_whole_alias_rate_limited_the_fallback_alias_answers(
    api, model_server, calls_since
) -> None:
    # both deployments of swarmd-fast and swarmd-smart refuse: the proxy falls back
    # to swarmd-backup and the app never sees an error
    user = f"t-fallback-{uuid.uuid4().hex[:8]}"
    faults = [{"model": m, "user": user, "status": 429} for m in ("mock-a", "mock-b")]
    assert model_server.put("/_control/faults", json=faults).status_code == 200
    fallbacks0 = metric(api, "swarmd_llm_fallbacks_total")
    errors0 = metric(api, "swarmd_llm_errors_total")
    calls = calls_since(user=user)
    r = api.post(
        "/v1/runs",
        json={
            "swarm": "scatter_gather",
            "input": {"task": "Fall back gracefully", "agents": 3, "user": user},
        },
    )
    assert r.status_code == 202, r.text
    view = wait_run(api, r.json()["run_id"], timeout_s=120)

    assert view["status"] == "completed", view
    log = calls()
    answered = [c for c in log if c["status"] == 200]
    assert {c["model"] for c in answered} == {"mock-backup"}, Counter(c["model"] for c in log)
    assert len(answered) == 5
    assert metric(api, "swarmd_llm_fallbacks_total") >= fallbacks0 + 5
    assert metric(api, "swarmd_llm_errors_total") == errors0


def test_all_deployments_5xx_then_recover_run_pauses_and_completes(
    api, model_server, calls_since
) -> None:
    # Agents run two at a time. Once two have answered, every upstream (all
    # deployments, the backup too) answers 503 to the next 20 calls, then recovers.
    # The proxy's bounded retries and fallback cannot hide that from the app: the
    # agent steps in flight fail, the workflow retries them with jittered backoff,
    # and the run goes on once the provider is back, without re-running anything
    # that had completed.
    # The faults and the count are scoped to this run's user: in one CI run a call
    # made for an earlier test's run was answered in the window and counted here.
    outage = 20
    user = f"t-outage-{uuid.uuid4().hex[:8]}"
    slow = {"model": "*", "user": user, "latency_ms": 150}
    assert model_server.put("/_control/faults", json=[slow]).status_code == 200
    calls = calls_since(user=user)
    r = api.post(
        "/v1/runs",
        json={
            "swarm": "scatter_gather",
            "input": {
                "task": "Write down how to survive a provider outage",
                "agents": 10,
                "max_parallel": 2,
                "user": user,
            },
        },
    )
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    wait_until(
        lambda: (
            ((api.get(f"/v1/runs/{run_id}").json().get("progress") or {}).get("agents_done") or 0)
            >= 2
        ),
        timeout_s=60,
        what="two agents done",
    )
    down = [{**slow, "status": 503, "count": outage}]
    assert model_server.put("/_control/faults", json=down).status_code == 200
    view = wait_run(api, run_id, timeout_s=240)

    assert view["status"] == "completed", view
    out = view["output"]
    assert [a["status"] for a in out["agent_results"]] == ["answered"] * 10, out["agent_results"]
    log = calls()
    failures = [i for i, c in enumerate(log) if c["status"] == 503]
    assert len(failures) == outage, Counter(log[i]["model"] for i in failures)
    assert "mock-backup" in {log[i]["model"] for i in failures}, "the fallback alias was tried"
    # every step answered exactly once: no completed agent (or planner) was re-run
    answered = _answered_once(log)
    assert len(answered) == 12 and set(answered.values()) == {1}, answered.most_common(3)
    assert out["usage"]["calls"] == 12
    # the run paused: nothing was answered between the first and the last 503, and
    # the first answer after the outage came after the engine's backoff
    assert all(c["status"] == 503 for c in log[failures[0] : failures[-1] + 1])
    resumed = next(c for c in log[failures[-1] :] if c["status"] == 200)
    pause = resumed["ts"] - log[failures[0]]["ts"]
    assert pause >= 0.5, pause
    print(f"outage of {outage} upstream calls paused the run for {pause:.1f}s")
