"""Each swarm pattern end to end through HTTP on the real stack."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import wait_run

pytestmark = pytest.mark.integration


def run(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = api.post("/v1/runs", json=body)
    assert r.status_code == 202, r.text
    view = wait_run(api, r.json()["run_id"])
    assert view["status"] == "completed", view
    return view


def answered(calls: Any, user: str) -> list[dict[str, Any]]:
    """Calls the model server answered for this test's runs (the gateway forwards
    the run's user id upstream), so calls of other runs never leak into a count."""
    return [c for c in calls() if c["status"] == 200 and c.get("user") == user]


def test_supervisor_picks_workers_until_done(api: httpx.Client, calls_since: Any) -> None:
    calls = calls_since()
    view = run(
        api, {"swarm": "supervisor", "input": {"task": "Write a launch checklist", "user": "t-sup"}}
    )
    out = view["output"]
    assert out["pattern"] == "supervisor" and view["swarm"] == "supervisor"
    # the (deterministic) supervisor sends each worker once, then says DONE
    assert [a["agent"] for a in out["agent_results"]] == ["researcher", "analyst", "writer"]
    assert out["rounds"] == 3 and out["answer"]
    # 4 picks (3 names + DONE) + 3 workers + 1 final answer
    assert len(answered(calls, "t-sup")) == 8 == out["usage"]["calls"]


def test_supervisor_stops_at_max_rounds(api: httpx.Client) -> None:
    spec = {
        "name": "short-leash",
        "pattern": "supervisor",
        "coordinator": {"name": "lead", "role": "You lead."},
        "agents": [
            {"name": "a", "role": "You do a."},
            {"name": "b", "role": "You do b."},
            {"name": "c", "role": "You do c."},
        ],
        "limits": {"max_rounds": 2},
    }
    out = run(api, {"spec": spec, "input": {"task": "Do the thing"}})["output"]
    assert out["rounds"] == 2 and [a["agent"] for a in out["agent_results"]] == ["a", "b"]


def test_debate_answers_critiques_and_judges(api: httpx.Client, calls_since: Any) -> None:
    calls = calls_since()
    out = run(
        api, {"swarm": "debate", "input": {"task": "Monolith or microservices?", "user": "t-deb"}}
    )["output"]
    agents = [a["agent"] for a in out["agent_results"]]
    # round 0 + 2 critique rounds, 3 agents each
    assert agents == ["optimist", "skeptic", "pragmatist"] * 3
    assert out["rounds"] == 2 and out["answer"]
    assert len(answered(calls, "t-deb")) == 3 * 3 + 1  # + the judge


def test_debate_by_vote(api: httpx.Client) -> None:
    spec = {
        "name": "vote",
        "pattern": "debate",
        "decision": "vote",
        "agents": [{"name": "x", "role": "r"}, {"name": "y", "role": "r"}],
        "limits": {"max_rounds": 1},
    }
    out = run(api, {"spec": spec, "input": {"task": "Pick one"}})["output"]
    finals = [a["content"] for a in out["agent_results"][-2:]]
    assert out["answer"] in finals


def test_pipeline_feeds_each_stage_the_previous_output(api: httpx.Client, calls_since: Any) -> None:
    calls = calls_since()
    out = run(
        api, {"swarm": "pipeline", "input": {"task": "Explain workflow replay", "user": "t-pipe"}}
    )["output"]
    stages = out["agent_results"]
    assert [s["agent"] for s in stages] == ["researcher", "drafter", "editor"]
    # the model server echoes the start of the prompt it got: stage 2 saw stage 1's output
    assert out["answer"] == stages[-1]["content"]
    assert len(answered(calls, "t-pipe")) == 3


def test_agent_uses_a_tool_through_activities(api: httpx.Client, calls_since: Any) -> None:
    calls = calls_since()
    spec = {
        "name": "calc",
        "pattern": "pipeline",
        "agents": [{"name": "mathlete", "role": "You compute.", "tools": ["calculator"]}],
    }
    task = 'use tool calculator with {"expression": "6*7"}'
    out = run(api, {"spec": spec, "input": {"task": task, "user": "t-tool"}})["output"]
    (agent,) = out["agent_results"]
    assert agent["status"] == "answered" and agent["turns"] == 2
    assert "42" in agent["content"]
    assert (
        len(answered(calls, "t-tool")) == 2
    )  # tool request, then the answer with the tool's result


def test_approval_gate_waits_for_the_event(api: httpx.Client, stack: Any) -> None:
    spec = {
        "name": "gated",
        "pattern": "pipeline",
        "approval": True,
        "agents": [{"name": "w", "role": "You write."}],
    }
    r = api.post("/v1/runs", json={"spec": spec, "input": {"task": "Draft a memo"}})
    run_id = r.json()["run_id"]
    from tests.conftest import wait_until

    wait_until(
        lambda: (
            (api.get(f"/v1/runs/{run_id}").json().get("progress") or {}).get("phase")
            == "awaiting_approval"
        ),
        what="the approval gate",
    )
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "running"
    # raise the event through the sidecar's workflow API (the run API has its own route too)
    ev = httpx.post(
        f"http://127.0.0.1:{stack.ports.dapr_http}/v1.0/workflows/dapr/"
        f"{run_id}/raiseEvent/approval",
        json={"approved": True},
    )
    assert ev.status_code < 300, ev.text
    view = wait_run(api, run_id)
    assert view["status"] == "completed" and view["output"]["approved"] is True
