"""``GET /v1/runs`` on the real stack: the durable run catalog lists ended and live
runs with their progress, usage and cost; filters, cursor pagination across catalog
pages (the test stack's pages hold 4 entries), and purge removing a run from it.

Each test filters on its own ``input.user``, so other tests' runs never count."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from swarmd.devstack.launcher import Stack
from tests.conftest import wait_run, wait_until

pytestmark = pytest.mark.integration


def start(api: httpx.Client, user: str, swarm: str = "scatter_gather", **inp: Any) -> str:
    body = {"swarm": swarm, "input": {"task": f"List me ({user})", "user": user, **inp}}
    r = api.post("/v1/runs", json=body)
    assert r.status_code == 202, r.text
    run_id: str = r.json()["run_id"]
    return run_id


def listing(api: httpx.Client, path: str = "/v1/runs", **params: Any) -> dict[str, Any]:
    r = api.get(path, params=params)
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    return page


def all_pages(
    api: httpx.Client, path: str = "/v1/runs", **params: Any
) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        page = listing(api, path, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 500, "pagination never ended"


def recorded(stack: Stack, run_id: str) -> dict[str, Any] | None:
    """The run's catalog record as the state store holds it, once its end is recorded."""
    key = quote(f"swarmd-run|{run_id}", safe="")
    r = httpx.get(f"{stack.dapr_url}/v1.0/state/statestore/{key}", timeout=10)
    assert r.status_code in (200, 204), r.text
    rec: dict[str, Any] | None = r.json() if r.status_code == 200 and r.content else None
    return rec if rec and rec.get("status") != "pending" else None


def test_lists_ended_runs_with_usage_filters_and_pages(api: httpx.Client, stack: Stack) -> None:
    user = "t-list"
    ids = [start(api, user, agents=2) for _ in range(5)]
    ids.append(start(api, user, swarm="pipeline"))
    other = start(api, "t-list-other", agents=2)
    for run_id in [*ids, other]:
        assert wait_run(api, run_id)["status"] == "completed"
    for run_id in ids:  # the tracker records each end in the run's catalog record
        rec = wait_until(lambda: recorded(stack, run_id), 30, "end recorded")  # noqa: B023
        assert rec["status"] == "completed" and rec["usage"]["calls"] > 0

    items = listing(api, user=user)["items"]
    assert [i["run_id"] for i in items] == list(reversed(ids))  # newest first
    created = [i["created_at"] for i in items]
    assert created == sorted(created, reverse=True)
    for item in items:
        assert item["status"] == "completed"
        assert item["user"] == user
        assert item["ended_at"] is not None
        assert item["usage"]["calls"] > 0 and item["usage"]["completion_tokens"] > 0
        assert "cost_usd" in item["usage"]
    sg = [i for i in items if i["swarm"] == "scatter_gather"]
    assert len(sg) == 5
    assert all(i["progress"]["agents_done"] == 2 for i in sg)
    # the list agrees with the run's own view
    one = api.get(f"/v1/runs/{ids[0]}").json()
    assert next(i for i in items if i["run_id"] == ids[0])["usage"] == one["usage"]

    pipeline = listing(api, user=user, swarm="pipeline")["items"]
    assert [i["run_id"] for i in pipeline] == [ids[5]]
    assert listing(api, user=user, status="failed")["items"] == []

    # pages of 2 across catalog pages of 4: every run once, in order, then the end
    pages = all_pages(api, user=user, limit=2)
    flat = [i["run_id"] for p in pages for i in p]
    assert flat == list(reversed(ids))
    assert [len(p) for p in pages[:3]] == [2, 2, 2]

    # time window: runs started at or after the third one
    after = items[3]["created_at"]
    window = listing(api, user=user, started_after=after)["items"]
    assert [i["run_id"] for i in window] == [i["run_id"] for i in items[:4]]
    before = listing(api, user=user, started_before=after)["items"]
    assert [i["run_id"] for i in before] == [i["run_id"] for i in items[4:]]

    # purge takes a run out of the list
    assert api.delete(f"/v1/runs/{ids[0]}").status_code == 204
    assert ids[0] not in [i["run_id"] for i in listing(api, user=user)["items"]]


def test_live_runs_show_live_status_and_filter_by_it(
    api: httpx.Client, model_server: httpx.Client
) -> None:
    user = "t-list-live"
    r = model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 400}])
    assert r.status_code == 200, r.text
    run_id = start(api, user, agents=3, max_parallel=1)

    def running() -> bool:
        items = listing(api, user=user, status="running")["items"]
        return [i["run_id"] for i in items] == [run_id]

    wait_until(running, 60, "the run listed as running")
    assert api.post(f"/v1/runs/{run_id}/pause").status_code == 202
    suspended = listing(api, user=user, status=["suspended"])["items"]
    assert [i["run_id"] for i in suspended] == [run_id]
    assert listing(api, user=user, status="running")["items"] == []
    assert api.post(f"/v1/runs/{run_id}/terminate").status_code == 202
    assert wait_run(api, run_id)["status"] == "terminated"
    wait_until(
        lambda: (
            [i["run_id"] for i in listing(api, user=user, status="terminated")["items"]] == [run_id]
        ),
        30,
        "the run listed as terminated",
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"status": "sleeping"}, "status"),
        ({"limit": 0}, "limit"),
        ({"swarm": "Bad Name"}, "swarm"),
        ({"started_after": "yesterday"}, "started_after"),
    ],
)
def test_bad_list_parameters_name_the_field(
    api: httpx.Client, params: dict[str, Any], field: str
) -> None:
    r = api.get("/v1/runs", params=params)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["field"].split(".")  # e.g. status.0


def test_lists_agents_newest_first_with_usage_and_drops_deprovisioned(
    api: httpx.Client,
) -> None:
    tag = uuid.uuid4().hex[:6]
    users = [f"t-alist-{tag}-{i}" for i in range(5)]
    for u in users:
        r = api.post("/v1/agents", json={"user_id": u, "template": "analyst"})
        assert r.status_code == 201, r.text
    r = api.post(f"/v1/agents/{users[0]}/messages", json={"text": "hello"})
    assert r.status_code == 202, r.text
    mid = r.json()["message_id"]
    r = api.get(f"/v1/agents/{users[0]}/messages/{mid}", params={"wait_s": 60})
    assert r.json()["status"] == "answered", r.text

    def mine() -> list[dict[str, Any]]:
        out = []
        for page in all_pages(api, "/v1/agents", limit=2):
            out += [i for i in page if i["user_id"].startswith(f"t-alist-{tag}")]
        return out

    items = mine()
    assert [i["user_id"] for i in items] == list(reversed(users))
    first = next(i for i in items if i["user_id"] == users[0])
    assert first["messages"] == 1 and first["usage_total"]["tokens"] > 0
    assert first["usage_today"]["messages"] == 1 and first["status"] == "running"
    assert all(i["template"] == "analyst" for i in items)
    assert listing(api, "/v1/agents", template="no-such-template")["items"] == []

    assert api.delete(f"/v1/agents/{users[1]}").json()["clean"] is True
    assert users[1] not in [i["user_id"] for i in mine()]
    for u in users:
        api.delete(f"/v1/agents/{u}")
