"""Mid-step checkpoints and large payloads by reference, on the real stack."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from swarmd.devstack.launcher import Stack
from tests.conftest import wait_run, wait_until

pytestmark = pytest.mark.integration


def test_step_killed_after_second_of_three_subcalls_resumes_at_the_third(
    stack: Stack,
    api: httpx.Client,
    model_server: httpx.Client,
    calls_since: Any,
) -> None:
    # three agents; a tiny reduce chunk size makes the reducer one activity with three
    # LLM sub-calls (one per chunk), checkpointed after each
    spec = {
        "name": "chunky",
        "pattern": "scatter_gather",
        "agents": [{"name": "analyst", "role": "You analyse."}],
        "limits": {"reduce_chunk_chars": 100},
    }
    calls = calls_since(user="t-checkpoint")
    # slow every call down so the third sub-call is in flight when we kill
    model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 800}])
    r = api.post(
        "/v1/runs",
        json={
            "spec": spec,
            "run_id": "checkpoint-run",
            "input": {"task": "Compare three storage engines", "agents": 3, "user": "t-checkpoint"},
        },
    )
    assert r.status_code == 202, r.text
    key = "checkpoint|checkpoint-run|reduce-chunks"
    state_url = f"http://127.0.0.1:{stack.ports.dapr_http}/v1.0/state/statestore/{key}"

    def two_partials_saved() -> bool:
        resp = httpx.get(state_url)
        done = len(resp.json()["partials"]) if resp.status_code == 200 else 0
        assert done < 3, "missed the window: all three sub-calls finished"
        return done == 2

    wait_until(two_partials_saved, timeout_s=120, what="the checkpoint after sub-call 2")
    stack.kill("app")  # SIGKILL while sub-call 3 is in flight
    model_server.put("/_control/faults", json=[])
    stack.restart_app()

    view = wait_run(api, "checkpoint-run")
    assert view["status"] == "completed", view
    answered = [c for c in calls() if c["status"] == 200]
    counts = Counter(c["messages_sha256"] for c in answered)
    # planner + 3 agents + 3 chunk summaries + final reducer = 8 distinct prompts
    assert len(counts) == 8, counts
    order = list(dict.fromkeys(c["messages_sha256"] for c in answered))
    sub1, sub2, sub3 = order[4:7]
    assert counts[sub1] == 1 and counts[sub2] == 1, "resumed sub-calls 1-2 instead of skipping"
    assert counts[sub3] in (1, 2)  # the one in flight at the kill may repeat
    assert view["output"]["usage"]["calls"] == 8


def test_large_agent_outputs_travel_by_reference(stack: Stack, api: httpx.Client) -> None:
    # five agents answering 1 MiB each: 5 MiB would not fit one 4 MiB gRPC message
    r = api.post(
        "/v1/runs",
        json={
            "swarm": "scatter_gather",
            "run_id": "big-payloads",
            "input": {"task": "Dump everything, answer in 1024 kilobytes", "agents": 5},
        },
    )
    assert r.status_code == 202, r.text
    view = wait_run(api, "big-payloads")
    assert view["status"] == "completed", view
    results = view["output"]["agent_results"]
    assert len(results) == 5
    assert all(len(a["content"]) == 1024 * 1024 for a in results)  # resolved by the API
    # ...while the workflow's own history carried only references
    raw = httpx.get(f"http://127.0.0.1:{stack.ports.dapr_http}/v1.0/workflows/dapr/big-payloads")
    assert raw.status_code == 200
    assert len(raw.content) < 200_000, len(raw.content)
    assert "[[swarmd-ref:payload|big-payloads|" in raw.text


def test_many_mid_size_answers_share_the_history_budget(stack: Stack, api: httpx.Client) -> None:
    # 120 agents x 40 KiB: each answer is far below the per-answer threshold, but
    # together (4.8 MiB) they would not fit the reducer's input message; the run's
    # history budget sends them by reference
    spec = {
        "name": "wide",
        "pattern": "scatter_gather",
        "agents": [{"name": "analyst", "role": "You analyse."}],
        "limits": {"max_parallel": 120, "reduce_chunk_chars": 1_500_000},
    }
    r = api.post(
        "/v1/runs",
        json={
            "spec": spec,
            "run_id": "wide-payloads",
            "input": {"task": "Go deep, answer in 40 kilobytes", "agents": 120},
        },
    )
    assert r.status_code == 202, r.text
    view = wait_run(api, "wide-payloads", timeout_s=600)
    assert view["status"] == "completed", view
    results = view["output"]["agent_results"]
    assert len(results) == 120 and all(len(a["content"]) == 40 * 1024 for a in results)
    # four chunk summaries (by the answers' real size) and the final merge
    assert view["output"]["usage"]["calls"] == 1 + 120 + 4 + 1
    raw = httpx.get(f"http://127.0.0.1:{stack.ports.dapr_http}/v1.0/workflows/dapr/wide-payloads")
    assert raw.status_code == 200 and len(raw.content) < 1_000_000, len(raw.content)
