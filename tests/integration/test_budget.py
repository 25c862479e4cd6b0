"""A spec's token budget stops a run cleanly, keeps what finished, and is visible
(run view, per-user usage, metrics). Real stack, deterministic model server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import wait_run, wait_until
from tests.integration.test_metrics import metric

pytestmark = pytest.mark.integration

TASK = "Estimate the cost of running a swarm of agents for a month"


def _spec(budget: int | None) -> dict[str, Any]:
    return {
        "name": "budgeted",
        "pattern": "scatter_gather",
        "agents": [{"name": "analyst", "role": "You analyse one part of a problem."}],
        "limits": {"max_parallel": 2, "token_budget": budget},
    }


def _start(api, budget: int | None, user: str) -> str:
    r = api.post(
        "/v1/runs",
        json={"spec": _spec(budget), "input": {"task": TASK, "agents": 10, "user": user}},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


def test_budget_smaller_than_the_run_needs_stops_it_and_keeps_completed_outputs(
    api, calls_since
) -> None:
    user = f"budget-user-{uuid.uuid4().hex[:8]}"
    # the same run without a budget: what it costs, step by step (deterministic model)
    full_calls = calls_since(user=user)
    full = wait_run(api, _start(api, None, user))
    assert full["status"] == "completed" and full["stop_reason"] is None, full
    agents_full = {a["agent"]: a for a in full["output"]["agent_results"]}
    per_agent = max(
        a["usage"]["prompt_tokens"] + a["usage"]["completion_tokens"] for a in agents_full.values()
    )
    total = full["usage"]["prompt_tokens"] + full["usage"]["completion_tokens"]
    first = next(c for c in full_calls() if c["status"] == 200)  # the planner's call
    planner = first["prompt_tokens"] + first["completion_tokens"]
    budget = planner + 3 * per_agent  # room for the planner and about three agents
    assert budget < total
    stops_before = metric(api, "swarmd_budget_stops_total", swarm="budgeted", reason="token_budget")

    calls = calls_since(user=user)
    view = wait_run(api, _start(api, budget, user))

    # a clear status: the run completed, stopped early by its budget
    assert view["status"] == "completed", view
    assert view["stop_reason"] == "token_budget"
    assert view["progress"]["phase"] == "stopped:token_budget"
    out = view["output"]
    assert out["stop_reason"] == "token_budget" and out["answer"] == ""
    used = view["usage"]["prompt_tokens"] + view["usage"]["completion_tokens"]
    assert used >= budget
    # the agents that finished are kept, exactly as they answered; no new ones started
    done = out["agent_results"]
    assert 3 <= len(done) < 10, [a["agent"] for a in done]
    for a in done:
        assert a["status"] == "answered"
        assert a["content"] == agents_full[a["agent"]]["content"]
        assert a["usage"] == agents_full[a["agent"]]["usage"]
    # no reducer ran, and nothing more was paid for than the kept steps
    answered = [c for c in calls() if c["status"] == 200]
    assert len(answered) == 1 + len(done) == view["usage"]["calls"]

    # visible to operators: the budget-stop counter and the user's usage
    wait_until(
        lambda: (
            metric(api, "swarmd_budget_stops_total", swarm="budgeted", reason="token_budget")
            >= stops_before + 1
        ),
        timeout_s=30,
        what="budget stop counted",
    )
    usage = wait_until(
        lambda: (u := api.get(f"/v1/usage/users/{user}").json())["runs"] == 2 and u,
        timeout_s=30,
        what="the user's two runs recorded",
    )
    assert usage["usage"]["prompt_tokens"] == (
        full["usage"]["prompt_tokens"] + view["usage"]["prompt_tokens"]
    )
    assert usage["usage"]["calls"] == full["usage"]["calls"] + view["usage"]["calls"]
    # the gateway saw the end user: LiteLLM passed the OpenAI `user` field upstream
    assert {c["user"] for c in answered} == {user}
