"""Per-user identity on the real stack: user tokens minted by the operator, each user
sees only its own runs, agent, messages, usage, streams and events; missing or
revoked tokens answer 401; per-user limits answer 429 with Retry-After."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from swarmd.devstack.launcher import Stack
from tests.conftest import wait_run, wait_until

pytestmark = pytest.mark.integration

FINAL = ("answered", "failed", "budget_exhausted")


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def mint(api: httpx.Client, user: str) -> dict[str, Any]:
    r = api.post(f"/v1/users/{user}/tokens")
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert body["token"].startswith("swd_") and body["user"] == user
    return body


def client_for(stack: Stack, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


@pytest.fixture
def users(stack: Stack, api: httpx.Client) -> Iterator[dict[str, Any]]:
    """alice and bob, each with a token and a client acting as them."""
    alice, bob = uid("alice"), uid("bob")
    ta, tb = mint(api, alice), mint(api, bob)
    with client_for(stack, ta["token"]) as ca, client_for(stack, tb["token"]) as cb:
        yield {"alice": alice, "bob": bob, "ca": ca, "cb": cb, "ta": ta, "tb": tb}


def reply(c: httpx.Client, user: str, mid: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        r = c.get(f"/v1/agents/{user}/messages/{mid}", params={"wait_s": 5})
        assert r.status_code == 200, r.text
        m: dict[str, Any] = r.json()
        return m if m["status"] in FINAL else None

    msg: dict[str, Any] = wait_until(done, timeout_s=120, what=f"reply {user}/{mid}")
    return msg


def sse(c: httpx.Client, path: str) -> tuple[int, list[str]]:
    """Status and the event names of a whole stream."""
    with c.stream("GET", path, timeout=60) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp.status_code, []
        names = [line[7:] for line in resp.iter_lines() if line.startswith("event: ")]
    return 200, names


def test_alice_and_bob_see_only_their_own(
    users: dict[str, Any], api: httpx.Client, stack: Stack
) -> None:
    alice, bob, ca, cb = users["alice"], users["bob"], users["ca"], users["cb"]
    assert ca.get("/v1/me").json() == {"user": alice, "operator": False, "via": "token"}

    # alice starts a run (owned by her: input.user is her), and talks to her agent
    r = ca.post("/v1/runs", json={"swarm": "scatter_gather", "input": {"task": "t", "agents": 2}})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    assert ca.post("/v1/agents", json={"user_id": alice, "template": "analyst"}).status_code == 201
    r = ca.post(f"/v1/agents/{alice}/messages", json={"text": "hello from alice"})
    assert r.status_code == 202, r.text
    mid = r.json()["message_id"]
    assert reply(ca, alice, mid)["status"] == "answered"
    view = wait_run(ca, run_id)
    assert view["status"] == "completed"
    assert sse(ca, f"/v1/runs/{run_id}/stream") == (200, ["end"])
    assert sse(ca, f"/v1/agents/{alice}/messages/{mid}/stream")[1][-1] == "answered"
    assert ca.get(f"/v1/agents/{alice}/usage").json()["total"]["messages"] == 1
    wait_until(
        lambda: ca.get(f"/v1/usage/users/{alice}").json()["runs"] == 1,
        timeout_s=60,
        what="alice's run usage",
    )

    # bob: every one of alice's things is 404, exactly like something that does not exist
    ghost_run = cb.get(f"/v1/runs/{uuid.uuid4().hex}")
    r = cb.get(f"/v1/runs/{run_id}")
    assert r.status_code == 404 and r.json()["error"]["code"] == ghost_run.json()["error"]["code"]
    assert alice not in r.text
    ghost_agent = cb.get(f"/v1/agents/{uid('nobody')}").json()["error"]["code"]
    for method, path in [
        ("GET", f"/v1/runs/{run_id}/stream"),
        ("GET", f"/v1/runs/{run_id}/agents"),
        ("GET", f"/v1/runs/{run_id}/agents/planner"),
        ("GET", f"/v1/runs/{run_id}/answer"),
        ("POST", f"/v1/runs/{run_id}/events/approval"),
        ("POST", f"/v1/runs/{run_id}/terminate"),
        ("POST", f"/v1/runs/{run_id}/pause"),
        ("POST", f"/v1/runs/{run_id}/resume"),
        ("DELETE", f"/v1/runs/{run_id}"),
    ]:
        r = cb.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "run_not_found"
    for method, path in [
        ("GET", f"/v1/agents/{alice}"),
        ("PATCH", f"/v1/agents/{alice}"),
        ("GET", f"/v1/agents/{alice}/messages"),
        ("GET", f"/v1/agents/{alice}/messages/{mid}"),
        ("GET", f"/v1/agents/{alice}/messages/{mid}/stream"),
        ("POST", f"/v1/agents/{alice}/messages"),
        ("GET", f"/v1/agents/{alice}/memory"),
        ("GET", f"/v1/agents/{alice}/usage"),
        ("GET", f"/v1/agents/{alice}/schedules"),
        ("DELETE", f"/v1/agents/{alice}"),
    ]:
        body = {"text": "hi"} if path.endswith("/messages") and method == "POST" else {}
        r = cb.request(method, path, json=body if method in ("POST", "PATCH") else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == ghost_agent
    r = cb.get(f"/v1/usage/users/{alice}")
    assert r.status_code == 404 and "hello" not in r.text
    # bob's lists never show alice's run or agent, even when he asks for her
    assert cb.post("/v1/agents", json={"user_id": bob, "template": "analyst"}).status_code == 201
    for params in ({}, {"user": alice}, {"limit": 200}):
        runs = cb.get("/v1/runs", params=params)
        assert runs.status_code == 200 and run_id not in runs.text and alice not in runs.text
        agents = cb.get("/v1/agents", params=params if "user" not in params else {})
        assert agents.status_code == 200 and alice not in agents.text
    assert [a["user_id"] for a in cb.get("/v1/agents").json()["items"]] == [bob]
    # alice's lists show hers; the operator's show everyone's
    assert run_id in [r["run_id"] for r in ca.get("/v1/runs").json()["items"]]
    assert [a["user_id"] for a in ca.get("/v1/agents").json()["items"]] == [alice]
    assert run_id in [
        r["run_id"] for r in api.get("/v1/runs", params={"user": alice}).json()["items"]
    ]
    # bob cannot start a run as alice, nor provision her agent
    r = cb.post("/v1/runs", json={"swarm": "pipeline", "input": {"task": "t", "user": alice}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "input.user"
    r = cb.post("/v1/agents", json={"user_id": alice, "template": "analyst"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "user_id"
    # a user agent's own workflow is not a run a user can reach through /v1/runs
    assert ca.get(f"/v1/runs/user-agent-{alice}").status_code == 404
    # nor do operator-only endpoints open to users
    assert cb.get("/v1/locks").status_code == 403
    assert cb.post(f"/v1/users/{bob}/tokens").status_code == 403
    # no user name in the metrics' labels
    assert alice not in httpx.get(f"{stack.api_url}/metrics").text

    # the operator sees alice's run and agent
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "completed"
    assert api.get(f"/v1/agents/{alice}").status_code == 200

    # missing, wrong and revoked tokens: 401
    assert httpx.get(f"{stack.api_url}/v1/runs/{run_id}").status_code == 401
    bad = {"Authorization": "Bearer swd_" + "x" * 43}
    assert httpx.get(f"{stack.api_url}/v1/runs/{run_id}", headers=bad).status_code == 401
    tokens = api.get(f"/v1/users/{alice}/tokens").json()["tokens"]
    assert [t["token_id"] for t in tokens] == [users["ta"]["token_id"]]
    assert "token" not in tokens[0]
    r = api.delete(f"/v1/users/{alice}/tokens/{users['ta']['token_id']}")
    assert r.status_code == 204
    r = ca.get(f"/v1/runs/{run_id}")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert sse(ca, f"/v1/runs/{run_id}/stream")[0] == 401
    assert sse(ca, f"/v1/agents/{alice}/messages/{mid}/stream")[0] == 401
    with httpx.Client(base_url=stack.api_url) as anonymous:  # no token at all
        assert sse(anonymous, f"/v1/runs/{run_id}/stream")[0] == 401
        assert sse(anonymous, f"/v1/agents/{alice}/messages/{mid}/stream")[0] == 401
        r = anonymous.post(f"/v1/runs/{run_id}/events/approval", json={})
        assert r.status_code == 401
    assert cb.get("/v1/me").status_code == 200  # bob's token is untouched


def test_per_user_limits_answer_429_and_the_heavy_user_waits_alone(
    users: dict[str, Any], api: httpx.Client, model_server: httpx.Client, stack: Stack
) -> None:
    """A user with ``SWARMD_USER_MAX_TURNS`` messages in flight gets 429; another user's
    message meanwhile is answered while the heavy user's queue is still full (its agent
    holds one turn at a time, so the queue delays nobody else)."""
    alice, bob, ca, cb = users["alice"], users["bob"], users["ca"], users["cb"]
    for c, u in ((ca, alice), (cb, bob)):
        assert c.post("/v1/agents", json={"user_id": u, "template": "analyst"}).status_code == 201
    # every LLM call takes 3 s: the heavy user's 8 turns need 24 s, its 12 posts far less
    model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 3000}])
    accepted: list[str] = []
    refused: list[httpx.Response] = []
    for i in range(12):
        r = ca.post(f"/v1/agents/{alice}/messages", json={"text": f"heavy {i}"})
        (accepted.append(r.json()["message_id"]) if r.status_code == 202 else refused.append(r))
    assert len(accepted) == 8  # SWARMD_USER_MAX_TURNS
    assert refused and all(r.status_code == 429 for r in refused)
    err = refused[0].json()["error"]
    assert err["limit"] == "turns_in_flight" and int(refused[0].headers["retry-after"]) >= 1
    # the operator is exempt
    assert api.post(f"/v1/agents/{alice}/messages", json={"text": "op"}).status_code == 202
    light = cb.post(f"/v1/agents/{bob}/messages", json={"text": "light"}).json()["message_id"]
    assert reply(cb, bob, light)["status"] == "answered"
    # ... while the heavy user's queue is still far from drained: it delayed nobody else
    last_heavy = ca.get(f"/v1/agents/{alice}/messages/{accepted[-1]}").json()
    assert last_heavy["status"] == "queued"


def test_start_rate_and_runs_in_flight_limits(
    stack: Stack, api: httpx.Client, model_server: httpx.Client
) -> None:
    carol = uid("carol")
    with client_for(stack, mint(api, carol)["token"]) as c:
        # slow calls: the runs stay in flight through the test (a pipeline: >= 2 calls)
        model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 5000}])
        body = {"swarm": "pipeline", "input": {"task": "slow"}}
        codes = [c.post("/v1/runs", json=body) for _ in range(9)]
        assert [r.status_code for r in codes[:8]] == [202] * 8  # SWARMD_USER_MAX_RUNS
        assert codes[8].status_code == 429, codes[8].text
        assert codes[8].json()["error"]["limit"] == "runs_in_flight"
        assert "retry-after" in codes[8].headers
        # the start rate (burst 30): refusals count as starts too, so 40 at once run out
        with ThreadPoolExecutor(10) as pool:
            burst = list(pool.map(lambda _: c.post("/v1/runs", json=body), range(40)))
        assert {r.status_code for r in burst} == {429}  # none became a 9th run, none a 5xx
        limits = {r.json()["error"]["limit"] for r in burst}
        assert "start_rate" in limits, limits
        model_server.put("/_control/faults", json=[])
        for r in codes[:8]:
            api.post(f"/v1/runs/{r.json()['run_id']}/terminate")
