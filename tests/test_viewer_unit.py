"""The run viewer without a stack: the timeline read from history events (built
here as the protobuf messages daprd sends), and the static bundle as served."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dapr.ext.workflow._durabletask.internal import history_events_pb2 as hpb
from dapr.ext.workflow._durabletask.internal import orchestration_pb2 as opb
from fastapi.testclient import TestClient
from google.protobuf import timestamp_pb2, wrappers_pb2

from swarmd.api.app import create_app
from swarmd.config import Settings
from swarmd.engine import names
from swarmd.engine.history import retries_of, timeline

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def ts(s: float) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(T0 + timedelta(seconds=s))
    return t


def sv(value: Any) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=json.dumps(value))


def usage(p: int, c: int, cost: float = 0.0) -> dict[str, Any]:
    return {"prompt_tokens": p, "completion_tokens": c, "calls": 1, "cost_usd": cost}


def created(eid: int, at: float, key: str, agent: str) -> Any:
    return hpb.HistoryEvent(
        eventId=eid,
        timestamp=ts(at),
        childWorkflowInstanceCreated=hpb.ChildWorkflowInstanceCreatedEvent(
            instanceId=f"run1.{key}", name=names.AGENT_LOOP, input=sv({"agent": agent})
        ),
    )


def child_done(sched: int, at: float, agent: str, status: str = "answered") -> Any:
    out = {
        "agent": agent,
        "status": status,
        "content": "x" * 10,
        "turns": 2,
        "usage": usage(100, 20, 0.001),
        "error": None,
        "content_chars": 5000,
    }
    return hpb.HistoryEvent(
        eventId=-1,
        timestamp=ts(at),
        childWorkflowInstanceCompleted=hpb.ChildWorkflowInstanceCompletedEvent(
            taskScheduledId=sched, result=sv(out)
        ),
    )


def scheduled(eid: int, at: float, agent: str) -> Any:
    return hpb.HistoryEvent(
        eventId=eid,
        timestamp=ts(at),
        taskScheduled=hpb.TaskScheduledEvent(name=names.CALL_LLM, input=sv({"agent": agent})),
    )


def task_done(sched: int, at: float) -> Any:
    res = {"content": "1. a\n2. b", "model": "m", "usage": usage(50, 10)}
    return hpb.HistoryEvent(
        eventId=-1,
        timestamp=ts(at),
        taskCompleted=hpb.TaskCompletedEvent(taskScheduledId=sched, result=sv(res)),
    )


def task_failed(sched: int, at: float) -> Any:
    return hpb.HistoryEvent(
        eventId=-1,
        timestamp=ts(at),
        taskFailed=hpb.TaskFailedEvent(
            taskScheduledId=sched,
            failureDetails=opb.TaskFailureDetails(errorMessage="gateway answered 503"),
        ),
    )


def test_timeline_has_each_agent_with_times_tokens_and_cost() -> None:
    events = [
        scheduled(0, 0.0, "planner"),
        task_failed(0, 0.5),  # the planner's first attempt failed: the engine retried it
        scheduled(2, 1.5, "planner"),
        task_done(2, 2.0),
        created(3, 2.1, "agent-1", "agent-1"),
        created(4, 2.1, "agent-2", "agent-2"),
        child_done(3, 4.0, "agent-1"),
        scheduled(5, 4.5, "reducer"),  # agent-2 still running
    ]
    entries, outputs = timeline("run1", events)
    assert [(e.id, e.kind, e.status) for e in entries] == [
        ("planner", "step", "answered"),
        ("agent-1", "agent", "answered"),
        ("agent-2", "agent", "running"),
        ("reducer", "step", "running"),
    ]
    planner, a1, a2, _ = entries
    assert planner.retries == 1 and planner.started_at == T0 and planner.error is None
    assert planner.usage.total_tokens == 60
    assert a1.started_at == T0 + timedelta(seconds=2.1)
    assert a1.ended_at == T0 + timedelta(seconds=4.0)
    assert (a1.turns, a1.usage.total_tokens, a1.usage.cost_usd) == (2, 120, 0.001)
    assert a1.output_chars == 5000  # the real length, though the content was a reference
    assert a1.instance_id == "run1.agent-1"
    assert a2.ended_at is None and a2.usage.total_tokens == 0
    assert set(outputs) == {"planner", "agent-1"}


def test_repeated_steps_are_separate_entries_and_debate_rounds_keep_their_keys() -> None:
    events = [
        scheduled(0, 0, "supervisor"),
        task_done(0, 1),
        created(1, 1, "round-1-w", "w"),
        child_done(1, 2, "w"),
        scheduled(2, 2, "supervisor"),
        task_done(2, 3),
        created(3, 3, "r1-w", "w"),
        child_done(3, 4, "w", status="failed"),
    ]
    entries, _ = timeline("run1", events)
    assert [(e.id, e.name) for e in entries] == [
        ("supervisor", "supervisor"),
        ("round-1-w", "w"),
        ("supervisor#2", "supervisor"),
        ("r1-w", "w"),
    ]
    assert entries[2].retries == 0  # a second call, not a retry
    assert entries[3].status == "failed"


def test_retries_leave_out_the_attempt_that_ended_a_failed_agent() -> None:
    entries, _ = timeline(
        "run1", [created(1, 0, "agent-1", "agent-1"), child_done(1, 1, "agent-1", "failed")]
    )
    assert retries_of(entries[0], failed=6) == 5
    ok, _ = timeline("run1", [created(1, 0, "agent-1", "agent-1"), child_done(1, 1, "agent-1")])
    assert retries_of(ok[0], failed=2) == 2
    assert retries_of(ok[0], failed=0) == 0


def group(eid: int, at: float, keys: list[str]) -> Any:
    jobs = [{"agent": k, "key": k, "task": "t"} for k in keys]
    return hpb.HistoryEvent(
        eventId=eid,
        timestamp=ts(at),
        taskScheduled=hpb.TaskScheduledEvent(name=names.RUN_AGENTS, input=sv({"jobs": jobs})),
    )


def group_done(sched: int, at: float, keys: list[str], stopped: str | None = None) -> Any:
    outs = [
        {"agent": k, "status": "answered", "content": k, "turns": 1, "usage": usage(10, 5)}
        for k in keys
    ]
    return hpb.HistoryEvent(
        eventId=-1,
        timestamp=ts(at),
        taskCompleted=hpb.TaskCompletedEvent(
            taskScheduledId=sched, result=sv({"outputs": outs, "stopped": stopped})
        ),
    )


def test_engine_v2_groups_give_each_agent_its_groups_times_and_its_own_usage() -> None:
    events = [
        group(0, 1, ["agent-1", "agent-2"]),
        task_failed(0, 2),  # the group's activity failed: the engine ran it again
        group(1, 3, ["agent-1", "agent-2"]),
        group_done(1, 5, ["agent-1"], stopped="token_budget"),
    ]
    entries, outputs = timeline("run1", events)
    assert [(e.id, e.status, e.retries) for e in entries] == [
        ("agent-1", "answered", 1),
        ("agent-2", "not_started", 1),
    ]
    a1 = entries[0]
    assert a1.started_at == T0 + timedelta(seconds=1) and a1.ended_at == T0 + timedelta(seconds=5)
    assert a1.usage.total_tokens == 15 and a1.instance_id is None
    assert entries[1].error == "token_budget" and set(outputs) == {"agent-1"}


def test_ui_is_served_with_a_strict_content_security_policy() -> None:
    app = create_app(Settings(api_token="t" * 32), start_engine=False)
    with TestClient(app) as c:
        r = c.get("/ui", follow_redirects=False)
        assert r.status_code in (307, 308) and r.headers["location"] == "/ui/"
        r = c.get("/ui/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert '<script type="module" src="app.js">' in r.text
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["referrer-policy"] == "no-referrer"
        js = c.get("/ui/app.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        # the bundle never puts the token in a URL: it only ever goes in a header
        for name in ("api.js", "sse.js"):
            src = c.get(f"/ui/{name}").text
            assert "Authorization" in src and "?token" not in src and "token=" not in src
        # the timeline routes are in the schema, behind the token
        schema = c.get("/openapi.json").json()
        assert "/v1/runs/{run_id}/agents" in schema["paths"]
        assert c.get("/v1/runs/x/agents").status_code == 401
