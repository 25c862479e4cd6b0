"""What the run viewer reads, on the real stack: a run's timeline from its workflow
history, outputs and answers on demand (payloads kept by reference included), and
the event stream's resume with ``Last-Event-ID``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import wait_run, wait_until
from tests.integration.test_run_control import get, of_user, quiet_for, read_sse, slow_models, start

pytestmark = pytest.mark.integration


def test_timeline_of_a_scatter_gather_lists_every_agent_with_times_and_tokens(
    api: httpx.Client,
) -> None:
    run_id = start(api, "Plan a launch, in parts", agents=12, max_parallel=4, user="t-tl")
    view = wait_run(api, run_id)
    assert view["status"] == "completed", view
    r = api.get(f"/v1/runs/{run_id}/agents")
    assert r.status_code == 200, r.text
    tl = r.json()
    agents = [e for e in tl["entries"] if e["kind"] == "agent"]
    steps = [e["id"] for e in tl["entries"] if e["kind"] == "step"]
    assert [a["id"] for a in sorted(agents, key=lambda a: int(a["id"].split("-")[1]))] == [
        f"agent-{i}" for i in range(1, 13)
    ]
    assert steps == ["planner", "reducer"]
    assert tl["agents_total"] == 12 and tl["queued"] == 0 and tl["status"] == "completed"
    for a in agents:
        assert a["status"] == "answered"
        # engine v1: a child workflow per agent; v2: agents in group activities
        assert a["instance_id"] in (None, f"{run_id}.{a['id']}")
        assert a["started_at"] <= a["ended_at"], a
        assert a["usage"]["prompt_tokens"] > 0 and a["usage"]["completion_tokens"] > 0, a
        assert a["turns"] == 1 and a["retries"] == 0 and a["output_chars"] > 0
    # the entries account for every token the run used
    assert tl["usage"] == view["usage"], (tl["usage"], view["usage"])

    out = api.get(f"/v1/runs/{run_id}/agents/agent-3").json()
    assert out["id"] == "agent-3" and out["status"] == "answered"
    assert out["content"] == view["output"]["agent_results"][2]["content"]
    assert api.get(f"/v1/runs/{run_id}/answer").json()["answer"] == view["output"]["answer"]

    r = api.get(f"/v1/runs/{run_id}/agents/agent-99")
    assert r.status_code == 404 and r.json()["error"]["code"] == "run_entry_not_found"
    assert r.json()["error"]["field"] == "entry_id"
    assert api.get("/v1/runs/no-such-run/agents").status_code == 404
    r = api.get(f"/v1/runs/{run_id}/answer", params={"max_chars": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "query.max_chars"


def test_a_large_answer_kept_by_reference_is_fetched_on_demand(api: httpx.Client) -> None:
    spec = {"name": "big", "pattern": "pipeline", "agents": [{"name": "w", "role": "You write."}]}
    task = "Write it all out: answer in 300 kilobytes"
    r = api.post("/v1/runs", json={"spec": spec, "input": {"task": task}})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    assert wait_run(api, run_id)["status"] == "completed"
    entry = next(e for e in api.get(f"/v1/runs/{run_id}/agents").json()["entries"])
    assert entry["output_chars"] == 300 * 1024  # its real size, though history holds a reference
    part = api.get(f"/v1/runs/{run_id}/agents/{entry['id']}", params={"max_chars": 1000}).json()
    assert part["truncated"] is True and len(part["content"]) == 1000
    assert part["content_chars"] == 300 * 1024 and "[[swarmd-ref:" not in part["content"]
    full = api.get(f"/v1/runs/{run_id}/agents/{entry['id']}").json()
    assert full["truncated"] is False and len(full["content"]) == 300 * 1024
    assert full["content"].startswith(part["content"])


def events_until(resp: httpx.Response, stop: Any) -> list[dict[str, str]]:
    """Events (``{"id", "event", "data"}``; comments as ``{"comment"}``) until stop(list)."""
    out: list[dict[str, str]] = []
    ev: dict[str, str] = {}
    for line in resp.iter_lines():
        if line.startswith(":"):
            out.append({"comment": line[1:].strip()})
        elif line == "":
            if ev:
                out.append(ev)
                ev = {}
        else:
            k, _, v = line.partition(":")
            ev[k] = v.removeprefix(" ")
        if stop(out):
            break
    return out


def test_stream_resumes_after_last_event_id_and_misses_nothing(
    api: httpx.Client, model_server: httpx.Client, calls_since: Any
) -> None:
    slow_models(model_server, 400)
    calls = of_user(calls_since(), "t-resume")
    run_id = start(api, "Resume my stream", agents=3, max_parallel=1, user="t-resume")
    url = f"/v1/runs/{run_id}/stream"
    with api.stream("GET", url, timeout=60) as resp:
        first = events_until(resp, lambda evs: any("event" in e for e in evs))
    last_id = next(e["id"] for e in first if "event" in e)
    assert last_id.isdigit()

    # paused: nothing changes, so a resumed stream sends no event, only keep-alives
    assert api.post(f"/v1/runs/{run_id}/pause").status_code == 202
    quiet_for(calls, 1.5)  # the agent that was in flight has finished its step
    with api.stream("GET", url, timeout=60) as resp:
        ids = events_until(resp, lambda evs: len(evs) >= 1 and "event" in evs[-1])
        paused_id = ids[-1]["id"]
    with api.stream("GET", url, headers={"Last-Event-ID": paused_id}, timeout=60) as resp:
        quiet = events_until(resp, lambda evs: sum("comment" in e for e in evs) >= 3)
    assert all("comment" in e for e in quiet), quiet  # nothing repeated

    # it changed while we were away: the resumed stream starts with what is newer
    assert api.post(f"/v1/runs/{run_id}/resume").status_code == 202
    wait_until(lambda: get(api, run_id)["status"] != "suspended", 30, "resumed")
    with api.stream("GET", url, headers={"Last-Event-ID": paused_id}, timeout=60) as resp:
        items = read_sse(resp)  # to the end
    kinds = [k for k, _ in items if k != "comment"]
    assert kinds[0] in ("progress", "end") and kinds[-1] == "end", kinds
    final = json.loads(items[-1][1])
    assert final["status"] == "completed" and final["progress"]["agents_done"] == 3

    # the ids are the run's state versions: the same on every connection, increasing
    with api.stream("GET", url, timeout=60) as resp:
        end = events_until(resp, lambda evs: any(e.get("event") == "end" for e in evs))
    end_id = next(e["id"] for e in end if e.get("event") == "end")
    assert int(end_id) > int(paused_id) > 0
    # after the end there is nothing more: 204, which also stops an EventSource
    r = api.get(url, headers={"Last-Event-ID": end_id})
    assert r.status_code == 204, r.text
    r = api.get(url, headers={"Last-Event-ID": "not-a-number"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "header.Last-Event-ID"
