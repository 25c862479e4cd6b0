"""End to end through HTTP on the real stack: a scatter-gather swarm."""

from __future__ import annotations

import pytest

from tests.conftest import wait_run

pytestmark = pytest.mark.integration


def test_twenty_agent_run_completes_with_exactly_22_llm_calls(api, calls_since) -> None:
    calls = calls_since()
    r = api.post(
        "/v1/runs",
        json={
            "swarm": "scatter_gather",
            "input": {
                "task": "Assess the risks of running LLM agents in production",
                "agents": 20,
                "user": "t-twenty",  # the gateway forwards it: the model log names the run's calls
            },
        },
    )
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]

    view = wait_run(api, run_id)

    assert view["status"] == "completed", view
    out = view["output"]
    results = out["agent_results"]
    assert len(results) == 20
    assert [a["agent"] for a in results] == [f"agent-{i}" for i in range(1, 21)]
    assert all(a["status"] == "answered" and a["content"] for a in results)
    # every agent worked on its own planner-assigned subtask
    assert len({a["content"] for a in results}) == 20
    assert all(f"Part {i} of 20" in results[i - 1]["content"] for i in range(1, 21))
    assert out["answer"]  # the reducer's merge
    assert view["progress"]["agents_done"] == 20
    # planner + 20 agents + reducer, each answered exactly once
    answered = [c for c in calls() if c["status"] == 200 and c.get("user") == "t-twenty"]
    assert len(answered) == 22, answered
    assert len([c for c in calls() if c["status"] == 200]) >= 22
    assert len({c["messages_sha256"] for c in answered}) == 22
    assert out["usage"]["calls"] == 22


def test_unknown_run_id_is_404(api) -> None:
    r = api.get("/v1/runs/does-not-exist")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "run_not_found"


def test_start_is_idempotent_with_client_run_id(api) -> None:
    body = {
        "swarm": "scatter_gather",
        "input": {"task": "Idempotency check", "agents": 2},
        "run_id": "idem-run-1",
    }
    first = api.post("/v1/runs", json=body)
    second = api.post("/v1/runs", json=body)
    assert first.status_code == 202 and second.status_code == 200, (first.text, second.text)
    assert second.json()["run_id"] == "idem-run-1" and second.json()["created"] is False
    clash = api.post("/v1/runs", json={**body, "input": {"task": "Other", "agents": 2}})
    assert clash.status_code == 409 and clash.json()["error"]["field"] == "run_id"
    assert wait_run(api, "idem-run-1")["status"] == "completed"
