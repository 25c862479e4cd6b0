"""The run supervisor's decisions (pure parts): when a run is stuck, and the pulses
that tell a slow model from a wedge. The real thing runs in
tests/integration/test_supervisor.py."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dapr.ext.workflow import WorkflowState, WorkflowStatus

from swarmd.config import Settings
from swarmd.engine.dapr import DaprClient
from swarmd.engine.pulse import Pulse, merge, run_of
from swarmd.engine.supervisor import Revival, RevivalRecord, RunSupervisor, judge
from swarmd.metrics import Metrics

NOW = 1_800_000_000.0
SETTINGS = Settings(stall_after_s=30, inflight_grace_s=200, llm_timeout_s=120)


class _State:
    """The fields of a WorkflowState the supervisor reads."""

    def __init__(self, status: WorkflowStatus, updated: float, phase: str | None = None) -> None:
        self.runtime_status = status
        self.last_updated_at = datetime.fromtimestamp(updated, UTC)
        self.created_at = datetime.fromtimestamp(updated - 5, UTC)
        self.serialized_custom_status = json.dumps({"phase": phase}) if phase else None


def st(status: WorkflowStatus, idle_s: float, phase: str | None = None) -> WorkflowState:
    return _State(status, NOW - idle_s, phase)  # type: ignore[return-value]


def test_a_run_with_no_progress_and_nothing_in_flight_is_stuck() -> None:
    v = judge(
        "r", {"t": NOW - 500}, st(WorkflowStatus.RUNNING, 31, "planning"), None, NOW, SETTINGS
    )
    assert v.stuck and v.stuck_for_s == pytest.approx(31)
    assert "planning" in v.why


def test_a_run_that_moved_recently_is_not_stuck() -> None:
    v = judge("r", {"t": NOW - 500}, st(WorkflowStatus.RUNNING, 29), None, NOW, SETTINGS)
    assert not v.stuck


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (st(WorkflowStatus.SUSPENDED, 3600), "paused"),
        (st(WorkflowStatus.RUNNING, 600, "awaiting_approval"), "waiting for approval"),
        (st(WorkflowStatus.COMPLETED, 3600), "ended"),
    ],
)
def test_paused_waiting_and_ended_runs_are_left_alone(state: WorkflowState, why: str) -> None:
    v = judge("r", {"t": NOW - 7200}, state, None, NOW, SETTINGS)
    assert not v.stuck and v.why == why


def test_a_slow_call_in_flight_is_not_a_wedge_until_the_grace_runs_out() -> None:
    idle = st(WorkflowStatus.RUNNING, 100)
    slow = {"last": NOW - 60, "inflight": 1, "oldest": NOW - 60}
    assert not judge("r", {"t": 0}, idle, slow, NOW, SETTINGS).stuck
    hung = {"last": NOW - 250, "inflight": 1, "oldest": NOW - 250}
    assert judge("r", {"t": 0}, st(WorkflowStatus.RUNNING, 250), hung, NOW, SETTINGS).stuck


def test_a_recent_call_or_revival_counts_as_progress() -> None:
    idle = st(WorkflowStatus.RUNNING, 100)
    assert not judge("r", {"t": 0}, idle, {"last": NOW - 5, "inflight": 0}, NOW, SETTINGS).stuck
    assert not judge("r", {"t": 0, "revived_at": NOW - 10}, idle, None, NOW, SETTINGS).stuck


def test_the_grace_for_calls_must_exceed_the_call_timeout() -> None:
    with pytest.raises(ValueError, match="inflight_grace_s"):
        Settings(inflight_grace_s=60, llm_timeout_s=120)


def test_pulse_counts_calls_in_flight_by_run_and_merges_owners() -> None:
    p = Pulse()
    h1 = p.begin("run1.agent-3")
    h2 = p.begin("run1")
    p.begin("run2.agent-1")
    p.end(h1)
    snap = p.snapshot()
    assert snap["run1"]["inflight"] == 1 and snap["run2"]["inflight"] == 1
    p.end(h2)
    assert p.snapshot()["run1"]["inflight"] == 0
    merged = merge(
        [
            {"runs": {"a": {"last": 5, "inflight": 0, "oldest": None}}},
            {"runs": {"a": {"last": 3, "inflight": 2, "oldest": 2}}},
            None,
        ]
    )
    assert merged["a"] == {"last": 5, "inflight": 2, "oldest": 2.0}
    assert run_of("abc.round-1-writer") == "abc"


def test_pulse_wrap_ends_the_call_when_the_activity_raises() -> None:
    p = Pulse()

    class Ctx:
        workflow_id = "run9.agent-1"

    async def boom(ctx: Any, inp: Any) -> Any:
        assert p.snapshot()["run9"]["inflight"] == 1
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        asyncio.run(p.wrap(boom)(Ctx(), None))
    assert p.snapshot()["run9"]["inflight"] == 0


def test_revivals_escalate_while_the_run_does_not_move_and_reset_when_it_does() -> None:
    settings = Settings(revive_actions=["nudge", "fresh_generation"], fresh_generation="always")
    dapr = DaprClient(settings.dapr_http_port, settings.state_store)  # never called here
    sup = RunSupervisor(settings, Metrics(), "me", None, dapr)  # type: ignore[arg-type]

    def rec(*ats: float) -> RevivalRecord:
        revs = [
            Revival(run_id="r", at=a, why="", action="nudge", stuck_for_s=9, generation=1, by="me")
            for a in ats
        ]
        return RevivalRecord(run_id="r", revivals=revs)

    assert sup._choose(rec(), moved_at=NOW - 100) == "nudge"
    assert sup._choose(rec(NOW - 50), moved_at=NOW - 100) == "fresh_generation"
    assert sup._choose(rec(NOW - 50), moved_at=NOW - 20) == "nudge"  # it moved since
    never = RunSupervisor(
        Settings(fresh_generation="never"),
        Metrics(),
        "me",
        None,  # type: ignore[arg-type]
        dapr,
    )
    assert never._choose(rec(NOW - 50, NOW - 40), moved_at=NOW - 100) == "nudge"


def test_chaos_excuses_only_calls_in_flight_within_a_second_of_a_kill() -> None:
    from bench.chaos import in_flight_near

    kill = 100.0
    assert in_flight_near({"ts": 99.5, "latency_ms": 400}, kill)  # answered at 99.9
    assert in_flight_near({"ts": 100.02, "latency_ms": 400}, kill)  # sent just after it
    assert not in_flight_near({"ts": 97.0, "latency_ms": 400}, kill)  # settled long before
    assert not in_flight_near({"ts": 102.0, "latency_ms": 400}, kill)  # well after


def test_chaos_excuses_calls_the_killed_app_sent_while_it_was_down(tmp_path: Path) -> None:
    from bench.chaos import sent_before, worker_connects

    log = tmp_path / "app.log"
    lines = [
        {"ts": "2026-12-01T19:33:00.000Z", "logger": "durabletask-worker", "msg": "Starting"},
        {
            "ts": "2026-12-01T19:33:39.500Z",
            "logger": "durabletask-worker",
            "msg": "Successfully connected to dns:127.0.0.1:1. Waiting for work items...",
        },
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    connected = worker_connects(log)
    assert connected == [datetime(2026, 12, 1, 19, 33, 39, 500000, tzinfo=UTC).timestamp()]
    kill, back = connected[0] - 30, connected[0]
    assert sent_before({"ts": kill + 9.5}, kill, back)  # queued in the gateway, then passed on
    assert sent_before({"ts": kill - 0.5}, kill, back)
    assert not sent_before({"ts": back + 0.1}, kill, back)  # the new app may have sent it
    assert not sent_before({"ts": kill - 5}, kill, back)  # long before the kill


def test_a_supervisor_counts_no_idle_time_from_before_it_started_looking() -> None:
    """After an app restart the runs wait for their activities to reach the new
    process: the app's own downtime is not a wedge."""
    state = st(WorkflowStatus.RUNNING, 90, "agents")  # last moved before the app died
    assert judge("r", {"t": 0}, state, None, NOW, SETTINGS).stuck
    v = judge("r", {"t": 0}, state, None, NOW, SETTINGS, watching_since=NOW - 20)
    assert not v.stuck and v.why == "moved 20s ago"
    later = judge("r", {"t": 0}, state, None, NOW + 15, SETTINGS, watching_since=NOW - 20)
    assert later.stuck and later.stuck_for_s == 35  # idle counted from its first look
