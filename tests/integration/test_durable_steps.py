"""Resuming inside a step (the journaled reduce) and large payloads by reference, on
the real stack."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from swarmd.devstack.launcher import Stack
from tests.conftest import wait_run, wait_until

pytestmark = pytest.mark.integration


def test_reduce_killed_with_two_of_three_summaries_done_pays_only_the_third(
    stack: Stack,
    api: httpx.Client,
    model_server: httpx.Client,
    calls_since: Any,
) -> None:
    # three agents; a tiny reduce chunk size makes the reducer one activity with three
    # concurrent LLM sub-calls (one per chunk), each journaled as it completes
    spec = {
        "name": "chunky",
        "pattern": "scatter_gather",
        "agents": [{"name": "analyst", "role": "You analyse."}],
        "limits": {"reduce_chunk_chars": 100},
    }
    calls = calls_since(user="t-checkpoint")
    # the third chunk's summary is slow (below the gateway's 45 s timeout), so it is
    # still in flight when the other two are journaled and the app is killed
    slow = [{"model": "*", "contains": "part 3 of 3", "latency_ms": 30_000}]
    model_server.put("/_control/faults", json=slow).raise_for_status()
    r = api.post(
        "/v1/runs",
        json={
            "spec": spec,
            "run_id": "checkpoint-run",
            "input": {"task": "Compare three storage engines", "agents": 3, "user": "t-checkpoint"},
        },
    )
    assert r.status_code == 202, r.text
    state = f"http://127.0.0.1:{stack.ports.dapr_http}/v1.0/state/statestore"

    def entry(i: int) -> str:  # the journal entry of summary i (its key holds slashes)
        return f"{state}/" + quote(
            f"journal|checkpoint-run|reducer-part-{i}/reduce-chunks/1/0", safe=""
        )

    journaled = [entry(1), entry(2)]

    def two_summaries_journaled() -> bool:
        return all(httpx.get(url).status_code == 200 for url in journaled)

    wait_until(two_summaries_journaled, timeout_s=120, what="summaries 1 and 2 in the journal")
    assert httpx.get(entry(3)).status_code == 204
    stack.kill("app")  # SIGKILL while sub-call 3 is in flight
    model_server.put("/_control/faults", json=[]).raise_for_status()
    stack.restart_app()

    view = wait_run(api, "checkpoint-run")
    assert view["status"] == "completed", view
    answered = [c for c in calls() if c["status"] == 200]
    counts = Counter(c["messages_sha256"] for c in answered)
    # planner + 3 agents + 3 chunk summaries + final reducer = 8 distinct prompts
    assert len(counts) == 8, counts
    order = list(dict.fromkeys(c["messages_sha256"] for c in answered))
    # answered before the kill: planner, the agents, then summaries 1 and 2 (3 was slow)
    sub1, sub2 = order[4:6]
    assert counts[sub1] == 1 and counts[sub2] == 1, "paid again for journaled summaries"
    assert sum(counts.values()) <= 9  # only the summary in flight at the kill may repeat
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
