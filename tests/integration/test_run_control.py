"""Steering runs on the real stack: pause/resume, terminate, purge, events, and the
server-sent event stream. The model server's latency injection makes runs slow
enough to act on mid-flight (the ``model_server`` fixture resets it)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import wait_run, wait_until

pytestmark = pytest.mark.integration

PHASES = ["planning", "agents", "reducing", "done"]


def start(
    api: httpx.Client, task: str, agents: int, max_parallel: int, user: str | None = None
) -> str:
    inp: dict[str, Any] = {"task": task, "agents": agents, "max_parallel": max_parallel}
    if user:
        inp["user"] = user  # forwarded upstream: the model server's log names the run's calls
    r = api.post("/v1/runs", json={"swarm": "scatter_gather", "input": inp})
    assert r.status_code == 202, r.text
    run_id: str = r.json()["run_id"]
    return run_id


def get(api: httpx.Client, run_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    return view


def in_fan_out(api: httpx.Client, run_id: str, done: int = 0) -> bool:
    p = get(api, run_id)["progress"] or {}
    return p.get("phase") == "agents" and p.get("agents_done", 0) >= done


def slow_models(model_server: httpx.Client, latency_ms: int) -> None:
    r = model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": latency_ms}])
    assert r.status_code == 200, r.text


def of_user(calls: Any, user: str) -> Any:
    """Only the calls made for ``user``'s runs (earlier tests' runs may still answer)."""
    return lambda: [c for c in calls() if c.get("user") == user]


def quiet_for(calls: Any, seconds: float, timeout_s: float = 30) -> int:
    """Wait until the model server answered nothing new for ``seconds``; the count."""
    deadline = time.monotonic() + timeout_s
    n, since = len(calls()), time.monotonic()
    while time.monotonic() - since < seconds:
        assert time.monotonic() < deadline, "model server calls never stopped"
        time.sleep(0.1)
        if (m := len(calls())) != n:
            n, since = m, time.monotonic()
    return n


def test_pause_holds_a_scatter_gather_and_resume_finishes_it(
    api: httpx.Client, model_server: httpx.Client, calls_since: Any
) -> None:
    slow_models(model_server, 300)
    calls = of_user(calls_since(), "t-pause")
    run_id = start(api, "Pause and resume me", agents=6, max_parallel=1, user="t-pause")
    wait_until(lambda: in_fan_out(api, run_id, done=1), 60, "first agent done")

    r = api.post(f"/v1/runs/{run_id}/pause")
    assert r.status_code == 202, r.text
    at = len(calls())
    assert r.json() == {
        "run_id": run_id,
        "action": "pause",
        "previous_status": "running",
        "event": None,
    }
    paused = get(api, run_id)
    assert paused["status"] == "suspended"
    assert api.post(f"/v1/runs/{run_id}/pause").status_code == 409  # already paused

    # the agent in flight finishes its LLM call, and the group sees the pause within
    # its gate's interval (0.5 s: one more 300 ms agent at most); then nothing moves
    n = quiet_for(calls, 1.5)
    time.sleep(2.0)  # the observation window: no progress while paused
    still = get(api, run_id)
    assert still["status"] == "suspended"
    assert still["progress"] == paused["progress"]
    # the agents run one at a time inside one group activity, which Dapr does not stop:
    # the group itself holds its next agents until the resume
    assert len(calls()) == n <= at + 2, (at, n)
    assert n < 1 + 6, n  # planner and 6 agents: some agent waits for the resume

    r = api.post(f"/v1/runs/{run_id}/resume")
    assert r.status_code == 202 and r.json()["previous_status"] == "suspended", r.text
    assert get(api, run_id)["status"] != "suspended"
    assert api.post(f"/v1/runs/{run_id}/resume").status_code == 409  # not paused any more
    view = wait_run(api, run_id, timeout_s=120)
    assert view["status"] == "completed", view
    assert view["progress"]["agents_done"] == 6 and view["output"]["answer"]
    assert len([c for c in calls() if c["status"] == 200]) == 1 + 6 + 1


def test_terminate_stops_the_run_and_its_agents_then_purge_removes_it(
    api: httpx.Client, model_server: httpx.Client, calls_since: Any
) -> None:
    slow_models(model_server, 1000)
    calls = of_user(calls_since(), "t-term")
    run_id = start(api, "Terminate me", agents=12, max_parallel=3, user="t-term")
    wait_until(lambda: in_fan_out(api, run_id), 60, "fan-out")

    r = api.delete(f"/v1/runs/{run_id}")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "run_state_conflict"
    assert "terminate" in r.json()["error"]["message"]

    r = api.post(f"/v1/runs/{run_id}/terminate", json={"reason": "operator says stop"})
    assert r.status_code == 202 and r.json()["action"] == "terminate", r.text
    view = wait_until(
        lambda: (v := get(api, run_id))["status"] == "terminated" and v, 30, "terminated"
    )
    assert view["output"] == {"reason": "operator says stop"}
    at = len(calls())

    # the agents stop: the calls in flight (3) finish, and the group, which Dapr lets
    # run on, sees the terminate within its gate's interval (0.5 s: at most one more
    # round of 3 one-second calls starts); the other agents are never paid for
    n = quiet_for(calls, 1.5)
    time.sleep(2.0)  # the observation window: no agent keeps calling the model
    assert len(calls()) == n <= at + 3 + 3, (at, n)
    assert n < 1 + 12, n  # planner and 12 agents: some were never called

    r = api.post(f"/v1/runs/{run_id}/terminate")
    assert r.status_code == 409 and r.json()["error"]["status"] == "terminated", r.text
    for action in ("pause", "resume"):
        assert api.post(f"/v1/runs/{run_id}/{action}").status_code == 409

    assert api.delete(f"/v1/runs/{run_id}").status_code == 204
    assert api.get(f"/v1/runs/{run_id}").status_code == 404
    assert api.delete(f"/v1/runs/{run_id}").status_code == 404


def read_sse(resp: httpx.Response) -> list[tuple[str, str]]:
    """(kind, payload) per event or comment: ("comment", text) or (event name, data)."""
    out: list[tuple[str, str]] = []
    event: dict[str, str] = {}
    for line in resp.iter_lines():
        if line.startswith(":"):
            out.append(("comment", line[1:].strip()))
        elif line == "":
            if event:
                out.append((event.get("event", "message"), event.get("data", "")))
                assert event.get("id", "").isdigit(), event
                event = {}
        else:
            key, _, value = line.partition(":")
            event[key] = value.removeprefix(" ")
    return out


def test_stream_sends_progress_keepalives_and_a_final_event(
    api: httpx.Client, model_server: httpx.Client
) -> None:
    slow_models(model_server, 1500)  # slower than the test stack's 0.5 s keep-alive
    run_id = start(api, "Stream me", agents=2, max_parallel=1)
    t0 = time.monotonic()
    with api.stream("GET", f"/v1/runs/{run_id}/stream", timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        items = read_sse(resp)
    elapsed = time.monotonic() - t0

    kinds = [k for k, _ in items]
    assert kinds[-1] == "end" and kinds.count("end") == 1, kinds
    assert "error" not in kinds
    assert ("comment", "keep-alive") in items
    progress = [json.loads(d) for k, d in items if k == "progress"]
    assert len(progress) >= 4, progress
    phases = [p["progress"]["phase"] for p in progress if p["progress"]]
    known = [PHASES.index(ph) for ph in phases if ph in PHASES]
    assert known == sorted(known) and {0, 1} <= set(known), phases
    done = [p["progress"]["agents_done"] for p in progress if p["progress"]]
    assert done == sorted(done) and done[-1] >= 1, done
    # a change is an event, nothing else is: consecutive events always differ
    keys = [(p["status"], p["progress"]) for p in progress]
    assert all(a != b for a, b in itertools.pairwise(keys))
    # keep-alives come only during silences (each slow LLM call is one)
    assert any(a == "comment" and b == "comment" for a, b in itertools.pairwise(kinds))

    final = json.loads(items[-1][1])
    assert final["run_id"] == run_id and final["status"] == "completed"
    assert final["output"]["answer"] and len(final["output"]["agent_results"]) == 2
    assert elapsed > 4 * 1.5  # planner, 2 agents, reducer: the stream lived through all of it


def test_stream_of_a_finished_run_is_just_the_final_event(api: httpx.Client) -> None:
    run_id = start(api, "Already done", agents=1, max_parallel=1)
    wait_run(api, run_id)
    with api.stream("GET", f"/v1/runs/{run_id}/stream") as resp:
        items = read_sse(resp)
    assert [k for k, _ in items] == ["end"]
    assert json.loads(items[0][1])["status"] == "completed"


def test_events_go_to_live_runs_and_finished_runs_refuse_them(
    api: httpx.Client, model_server: httpx.Client
) -> None:
    slow_models(model_server, 300)
    run_id = start(api, "Events", agents=1, max_parallel=1)
    r = api.post(f"/v1/runs/{run_id}/events/note.v1", json={"approved": True, "by": "ops"})
    assert r.status_code == 202, r.text
    assert r.json()["event"] == "note.v1" and r.json()["previous_status"] in ("pending", "running")
    assert api.post(f"/v1/runs/{run_id}/events/ping").status_code == 202  # no body is fine

    assert wait_run(api, run_id)["status"] == "completed"
    r = api.post(f"/v1/runs/{run_id}/events/approval", json={"approved": True})
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "run_state_conflict" and err["status"] == "completed"
    r = api.post(f"/v1/runs/{run_id}/events/bad name!")
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    for action in ("pause", "resume", "terminate"):
        assert api.post(f"/v1/runs/{run_id}/{action}").status_code == 409, action


def start_gated(api: httpx.Client, name: str = "gated", task: str = "Draft a memo") -> str:
    """Start a one-agent pipeline with an approval gate; return once it waits there."""
    spec = {
        "name": name,
        "pattern": "pipeline",
        "approval": True,
        "agents": [{"name": "w", "role": "You write."}],
    }
    r = api.post("/v1/runs", json={"spec": spec, "input": {"task": task}})
    assert r.status_code == 202, r.text
    run_id: str = r.json()["run_id"]
    wait_until(
        lambda: (get(api, run_id)["progress"] or {}).get("phase") == "awaiting_approval",
        60,
        "the approval gate",
    )
    return run_id


def test_approval_event_through_the_api_releases_the_gate(api: httpx.Client) -> None:
    run_id = start_gated(api)
    r = api.post(f"/v1/runs/{run_id}/events/approval", json={"approved": False, "by": "ops"})
    assert r.status_code == 202 and r.json()["previous_status"] == "running", r.text
    view = wait_run(api, run_id)
    assert view["status"] == "completed" and view["output"]["approved"] is False, view


ENDPOINTS = [
    ("GET", "/v1/runs/{}/stream"),
    ("POST", "/v1/runs/{}/events/approval"),
    ("POST", "/v1/runs/{}/terminate"),
    ("POST", "/v1/runs/{}/pause"),
    ("POST", "/v1/runs/{}/resume"),
    ("DELETE", "/v1/runs/{}"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_unknown_run_is_404(api: httpx.Client, method: str, path: str) -> None:
    r = api.request(method, path.format("no-such-run"))
    assert r.status_code == 404, r.text
    assert r.json()["error"] == {
        "code": "run_not_found",
        "message": "no run with id 'no-such-run'",
        "field": "run_id",
    }


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_missing_token_is_401(api: httpx.Client, method: str, path: str) -> None:
    r = httpx.request(method, api.base_url.join(path.format("no-such-run")))
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"
