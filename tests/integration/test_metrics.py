"""``GET /metrics`` on the real app: the series exist and move as runs progress."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_run, wait_until

pytestmark = pytest.mark.integration


def scrape(api: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    # no bearer token: /metrics is open like the health endpoints
    r = httpx.get(str(api.base_url.join("/metrics")), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(api: httpx.Client, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape(api).items() if n == name and want <= ls)


def test_metrics_move_as_a_run_progresses(api, model_server) -> None:
    def m(name: str, **labels: str) -> float:
        return metric(api, name, **labels)

    # runs of earlier tests may still be waiting to be counted: start from a quiet tracker
    wait_until(lambda: m("swarmd_runs_in_flight") == 0, timeout_s=30, what="no run in flight")
    started0 = m("swarmd_runs_started_total", swarm="scatter_gather")
    completed0 = m("swarmd_runs_completed_total", swarm="scatter_gather")
    calls0 = m("swarmd_llm_calls_total")
    fast0 = m("swarmd_llm_calls_total", model="swarmd-fast")
    tokens0 = m("swarmd_llm_tokens_total", type="input")
    steps0 = m("swarmd_agent_step_seconds_count", kind="llm")
    errors0 = m("swarmd_llm_errors_total", model="swarmd-smart")

    # a short outage (every upstream answers 503 to the first 6 calls): the planner's
    # first attempt fails in the app (an error by alias), the engine retries it, and
    # slow answers keep the run in flight long enough to see the gauge.
    faults = [{"model": "*", "status": 503, "count": 6, "latency_ms": 200}]
    assert model_server.put("/_control/faults", json=faults).status_code == 200
    r = api.post(
        "/v1/runs",
        json={"swarm": "scatter_gather", "input": {"task": "Watch the gauges move", "agents": 4}},
    )
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    assert m("swarmd_runs_started_total", swarm="scatter_gather") == started0 + 1
    wait_until(
        lambda: m("swarmd_runs_in_flight", swarm="scatter_gather") >= 1,
        timeout_s=30,
        what="the run in flight",
    )
    view = wait_run(api, run_id, timeout_s=120)
    assert view["status"] == "completed", view
    assert model_server.put("/_control/faults", json=[]).status_code == 200

    wait_until(
        lambda: m("swarmd_runs_completed_total", swarm="scatter_gather") == completed0 + 1,
        timeout_s=30,
        what="the run counted as completed",
    )
    # the gauge is refreshed from the durable run index about once a second
    wait_until(
        lambda: m("swarmd_runs_in_flight", swarm="scatter_gather") == 0,
        timeout_s=15,
        what="the in-flight gauge back at 0",
    )
    names = {n for n, _ in scrape(api)}
    for series in (
        "swarmd_runs_in_flight",
        "swarmd_runs_started_total",
        "swarmd_runs_completed_total",
        "swarmd_llm_calls_total",
        "swarmd_llm_tokens_total",
        "swarmd_agent_step_seconds_count",
    ):
        assert series in names, series  # every series exists once a run went through
    assert m("swarmd_llm_calls_total") == calls0 + 6  # planner, 4 agents, reducer
    assert m("swarmd_llm_calls_total", model="swarmd-fast") == fast0 + 4
    assert m("swarmd_llm_tokens_total", type="input") == tokens0 + view["usage"]["prompt_tokens"]
    assert m("swarmd_agent_step_seconds_count", kind="llm") >= steps0 + 6
    assert m("swarmd_llm_errors_total", model="swarmd-smart") >= errors0 + 1


def test_terminated_run_leaves_the_in_flight_gauge(api, model_server) -> None:
    terminated0 = metric(api, "swarmd_runs_terminated_total", swarm="scatter_gather")
    assert (
        model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 3000}]).status_code
        == 200
    )
    r = api.post(
        "/v1/runs",
        json={"swarm": "scatter_gather", "input": {"task": "Never mind", "agents": 2}},
    )
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    # the tracker's gauge follows the run index (a reconcile pass that read it just
    # before the start may set it once more from that read)
    wait_until(
        lambda: metric(api, "swarmd_runs_in_flight", swarm="scatter_gather") >= 1,
        timeout_s=10,
        what="the run in flight",
    )
    t = api.post(f"/v1/runs/{run_id}/terminate", json={})
    assert t.status_code in (200, 202), t.text
    assert wait_run(api, run_id)["status"] == "terminated"
    wait_until(
        lambda: (
            metric(api, "swarmd_runs_terminated_total", swarm="scatter_gather") == terminated0 + 1
        ),
        timeout_s=30,
        what="the run counted as terminated",
    )
    wait_until(
        lambda: metric(api, "swarmd_runs_in_flight", swarm="scatter_gather") == 0,
        timeout_s=15,
        what="the in-flight gauge back at 0",
    )


def test_failed_run_is_counted(api, model_server) -> None:
    failed0 = metric(api, "swarmd_runs_failed_total", swarm="scatter_gather")
    errors0 = metric(api, "swarmd_llm_errors_total", model="swarmd-smart", reason="400")
    # every upstream refuses the request (400): the gateway's fallback gets the same,
    # the engine does not retry a 400, so the planner step fails for good and the run
    # with it
    refuse = [{"model": "*", "status": 400}]
    assert model_server.put("/_control/faults", json=refuse).status_code == 200
    r = api.post(
        "/v1/runs",
        json={"swarm": "scatter_gather", "input": {"task": "Doomed from the start", "agents": 2}},
    )
    assert r.status_code == 202, r.text
    assert wait_run(api, r.json()["run_id"])["status"] == "failed"
    wait_until(
        lambda: metric(api, "swarmd_runs_failed_total", swarm="scatter_gather") == failed0 + 1,
        timeout_s=30,
        what="the run counted as failed",
    )
    assert metric(api, "swarmd_llm_errors_total", model="swarmd-smart", reason="400") == errors0 + 1


def test_in_flight_and_completion_survive_an_app_restart(api, model_server, stack) -> None:
    # the run is in the durable run index, so a new process reports it in flight and
    # counts its end, though the process that started it is gone
    spec = {
        "name": "restarted",
        "pattern": "scatter_gather",
        "agents": [{"name": "analyst", "role": "You analyse."}],
        "limits": {"max_parallel": 1},
    }
    slow = [{"model": "*", "latency_ms": 400}]
    assert model_server.put("/_control/faults", json=slow).status_code == 200
    r = api.post("/v1/runs", json={"spec": spec, "input": {"task": "Outlive me", "agents": 4}})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    wait_until(
        lambda: metric(api, "swarmd_runs_in_flight", swarm="restarted") == 1,
        timeout_s=10,
        what="the run in flight",
    )

    stack.kill("app")
    stack.restart_app()
    wait_until(
        lambda: metric(api, "swarmd_runs_in_flight", swarm="restarted") == 1,
        timeout_s=30,
        what="the new process reporting the run in flight",
    )
    assert wait_run(api, run_id, timeout_s=120)["status"] == "completed"
    wait_until(
        lambda: metric(api, "swarmd_runs_completed_total", swarm="restarted") == 1,
        timeout_s=30,
        what="the new process counting the run's end",
    )
    assert metric(api, "swarmd_runs_in_flight", swarm="restarted") == 0
