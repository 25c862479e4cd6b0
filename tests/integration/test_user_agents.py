"""Per-user agents on the real stack: one long-lived workflow per user behind /v1/agents."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from dapr.ext.workflow import WorkflowStatus
from dapr.ext.workflow.aio import DaprWorkflowClient

from swarmd.agents.wake import Waker
from swarmd.devstack.launcher import Stack
from swarmd.engine import names
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def provision(api: httpx.Client, user: str, template: str = "manager") -> dict[str, Any]:
    r = api.post("/v1/agents", json={"user_id": user, "template": template})
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


def send(api: httpx.Client, user: str, text: str) -> str:
    r = api.post(f"/v1/agents/{user}/messages", json={"text": text})
    assert r.status_code == 202, r.text
    mid: str = r.json()["message_id"]
    return mid


def reply(api: httpx.Client, user: str, mid: str, timeout_s: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        r = api.get(f"/v1/agents/{user}/messages/{mid}", params={"wait_s": 5})
        assert r.status_code == 200, r.text
        m: dict[str, Any] = r.json()
        return m if m["status"] in ("answered", "failed", "budget_exhausted") else None

    msg: dict[str, Any] = wait_until(done, timeout_s=timeout_s, what=f"reply to {user}/{mid}")
    return msg


def wait_idle(api: httpx.Client, user: str) -> dict[str, Any]:
    """The agent's view once its workflow waits idle (nothing to answer)."""
    view: dict[str, Any] = wait_until(
        lambda: (v := api.get(f"/v1/agents/{user}").json())["workflow"]["phase"] == "idle" and v,
        timeout_s=60,
        what="the agent to wait idle",
    )
    return view


def state_key(stack: Stack, key: str) -> Any:
    r = httpx.get(f"{stack.dapr_url}/v1.0/state/statestore/{quote(key, safe='')}", timeout=10)
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 and r.content else None


@pytest.fixture
def healthy_stack(stack: Stack) -> Iterator[Stack]:
    yield stack
    if stack.procs["app"].popen.poll() is not None:
        stack.start_app_process()
    stack.wait_app_ready(stack.procs["app"])


def test_provisioning_is_idempotent(api: httpx.Client) -> None:
    user = uid("ida")
    first = api.post("/v1/agents", json={"user_id": user, "template": "analyst"})
    assert first.status_code == 201, first.text
    assert first.json()["created"] is True
    again = api.post("/v1/agents", json={"user_id": user, "template": "analyst"})
    assert again.status_code == 200 and again.json()["created"] is False
    other = api.post("/v1/agents", json={"user_id": user, "template": "engineer"})
    assert other.status_code == 409 and other.json()["error"]["field"] == "template"
    view = wait_idle(api, user)
    assert view["workflow"]["instance_id"] == f"user-agent-{user}"
    assert view["workflow"]["status"] == "running"
    bad = api.post("/v1/agents", json={"user_id": "no|pipes", "template": "analyst"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "user_id"
    unknown = api.post("/v1/agents", json={"user_id": uid("x"), "template": "wizard"})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "template"


def test_baseline_cannot_be_widened(api: httpx.Client) -> None:
    user = uid("bea")
    provision(api, user, "engineer")  # the template lists http_get; the baseline denies it
    view = api.get(f"/v1/agents/{user}").json()
    assert "http_get" not in view["effective"]["tools"]
    r = api.patch(f"/v1/agents/{user}", json={"preferences": {"tools": ["http_get"]}})
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "baseline_violation" and err["field"] == "preferences.tools"
    assert "denied by the operator baseline" in err["message"]
    r = api.patch(f"/v1/agents/{user}", json={"preferences": {"max_daily_tokens": 10**9}})
    assert r.status_code == 403 and r.json()["error"]["field"] == "preferences.max_daily_tokens"
    r = api.patch(
        f"/v1/agents/{user}", json={"skills": {"web": {"prompt": "p", "tools": ["http_get"]}}}
    )
    assert r.status_code == 403 and r.json()["error"]["field"] == "skills.web.tools"
    ok = api.patch(
        f"/v1/agents/{user}",
        json={
            "preferences": {"tools": ["calculator"], "max_daily_tokens": 500},
            "skills": {"sum": {"prompt": "Add things up.", "tools": ["calculator"]}},
        },
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["effective"]["tools"] == ["calculator"]
    assert ok.json()["effective"]["max_daily_tokens"] == 500


def test_two_users_memories_stay_apart(api: httpx.Client) -> None:
    alice, bob = uid("alice"), uid("bob")
    for u in (alice, bob):
        provision(api, u)
    write = 'use tool memory_write with {{"key": "codeword", "value": "{}"}}'
    m_a = send(api, alice, write.format("ALPHA"))
    m_b = send(api, bob, write.format("BRAVO"))
    assert reply(api, alice, m_a)["status"] == "answered"
    assert reply(api, bob, m_b)["status"] == "answered"
    read = 'use tool memory_read with {"key": "codeword"}'
    r_a = reply(api, alice, send(api, alice, read))
    r_b = reply(api, bob, send(api, bob, read))
    assert "ALPHA" in r_a["reply"] and "BRAVO" not in r_a["reply"], r_a
    assert "BRAVO" in r_b["reply"] and "ALPHA" not in r_b["reply"], r_b
    mem_a = str(api.get(f"/v1/agents/{alice}/memory").json())
    mem_b = str(api.get(f"/v1/agents/{bob}/memory").json())
    assert "ALPHA" in mem_a and "BRAVO" not in mem_a
    assert "BRAVO" in mem_b and "ALPHA" not in mem_b
    # a message id of one user is not readable through another user's path
    assert api.get(f"/v1/agents/{bob}/messages/{m_a}").json()["text"] != write.format("ALPHA")


def test_concurrent_messages_to_one_user_are_answered_in_order(api: httpx.Client) -> None:
    user = uid("ord")
    provision(api, user)
    ids: list[str] = []
    mu = threading.Lock()

    def post(i: int) -> None:
        mid = send(api, user, f"question number {i}")
        with mu:
            ids.append(mid)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == ["m1", "m2"]
    first, second = reply(api, user, "m1"), reply(api, user, "m2")
    assert first["status"] == second["status"] == "answered"
    assert first["answered_at"] <= second["started_at"], (first, second)
    assert first["text"] in first["reply"] or first["reply"]


def test_daily_budget_stops_one_user_while_others_carry_on(api: httpx.Client) -> None:
    poor, rich = uid("poor"), uid("rich")
    provision(api, poor)
    provision(api, rich)
    r = api.patch(f"/v1/agents/{poor}", json={"preferences": {"max_daily_tokens": 1}})
    assert r.status_code == 200, r.text
    assert reply(api, poor, send(api, poor, "first question"))["status"] == "answered"
    stopped = reply(api, poor, send(api, poor, "second question"))
    assert stopped["status"] == "budget_exhausted", stopped
    assert "daily token budget exhausted" in stopped["error"]
    assert reply(api, rich, send(api, rich, "a question"))["status"] == "answered"
    usage = api.get(f"/v1/agents/{poor}/usage").json()
    assert usage["today"]["messages"] == 1 and usage["today"]["tokens"] >= 1
    assert usage["max_daily_tokens"] == 1


def test_deprovisioning_leaves_no_key_behind(api: httpx.Client, stack: Stack) -> None:
    user = uid("gone")
    provision(api, user)
    mid = send(api, user, 'use tool memory_write with {"key": "secret", "value": "S3"}')
    assert reply(api, user, mid)["status"] == "answered"
    r = api.post(f"/v1/agents/{user}/schedules", json={"prompt": "ping", "daily_at": "09:00"})
    assert r.status_code == 201, r.text
    memory_key = f"memory|user:{user}|assistant|secret"
    assert state_key(stack, memory_key) == "S3"
    report = api.delete(f"/v1/agents/{user}")
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["clean"] is True and body["keys_left"] == [] and body["workflows_left"] == []
    assert body["deleted_keys"] >= 7
    for k in (
        memory_key,
        f"agent|{user}|profile",
        f"agent|{user}|msg|1",
        f"agent|{user}|memory",
        f"agent|{user}|schedules",
        f"agent|{user}|index",
    ):
        assert state_key(stack, k) is None, k
    assert api.get(f"/v1/agents/{user}").status_code == 404
    assert api.get(f"/v1/runs/user-agent-{user}").status_code == 404
    assert api.get(f"/v1/runs/user-agent-{user}.t1").status_code == 404


def _job_replies(api: httpx.Client, user: str) -> list[dict[str, Any]]:
    msgs = api.get(f"/v1/agents/{user}/messages", params={"limit": 200}).json()["messages"]
    return [m for m in msgs if m["kind"] == "job" and m["status"] == "answered"]


def test_schedule_fires_and_survives_an_app_sigkill(
    api: httpx.Client, healthy_stack: Stack
) -> None:
    stack = healthy_stack
    user = uid("sched")
    provision(api, user)
    r = api.post(
        f"/v1/agents/{user}/schedules", json={"prompt": "check the build and tell me", "every_s": 2}
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    listed = api.get(f"/v1/agents/{user}/schedules").json()["schedules"]
    assert [s["id"] for s in listed] == [sid]
    wait_until(lambda: len(_job_replies(api, user)) >= 1, timeout_s=60, what="first firing")
    before = len(_job_replies(api, user))

    stack.kill("app")  # SIGKILL between firings: the timer lives in the Dapr scheduler
    stack.restart_app()
    stack.wait_app_ready(stack.procs["app"])

    wait_until(
        lambda: len(_job_replies(api, user)) >= before + 2, timeout_s=120, what="firings after"
    )
    jobs = _job_replies(api, user)
    assert all(j["schedule_id"] == sid and "check the build" in j["text"] for j in jobs)
    assert len({j["fire_at"] for j in jobs}) == len(jobs)  # each firing once
    assert api.get(f"/v1/agents/{user}/usage").json()["today"]["jobs"] >= len(jobs)

    assert api.delete(f"/v1/agents/{user}/schedules/{sid}").status_code == 200
    assert api.get(f"/v1/agents/{user}/schedules").json()["schedules"] == []
    assert api.delete(f"/v1/agents/{user}/schedules/{sid}").status_code == 404


def test_a_skill_narrows_tools_and_prompt_for_one_message(api: httpx.Client) -> None:
    user = uid("skill")
    provision(api, user, "analyst")
    r = api.patch(
        f"/v1/agents/{user}",
        json={"skills": {"sum": {"prompt": "Add things up.", "tools": ["calculator"]}}},
    )
    assert r.status_code == 200, r.text
    r = api.post(
        f"/v1/agents/{user}/messages",
        json={"text": 'use tool calculator with {"expression": "6*7"}', "skill": "sum"},
    )
    assert r.status_code == 202, r.text
    msg = reply(api, user, r.json()["message_id"])
    assert msg["status"] == "answered" and "42" in msg["reply"], msg
    r = api.post(f"/v1/agents/{user}/messages", json={"text": "hi", "skill": "nope"})
    # the user has no such skill: 404 naming it (a schema cannot list one user's skills, so
    # 422 would reject a request the OpenAPI document calls valid)
    assert r.status_code == 404 and r.json()["error"]["field"] == "skill"
    events = []
    with api.stream("GET", f"/v1/agents/{user}/messages/{msg['message_id']}/stream") as s:
        for line in s.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
    assert events == ["answered"]


def test_a_turn_resumes_after_an_app_sigkill_mid_turn(
    api: httpx.Client, healthy_stack: Stack, model_server: httpx.Client
) -> None:
    stack = healthy_stack
    user = uid("crash")
    provision(api, user)
    model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 1500}])
    mid = send(api, user, "a question answered across a crash")
    wait_until(
        lambda: api.get(f"/v1/agents/{user}/messages/{mid}").json()["status"] == "running",
        timeout_s=60,
        what="the turn to start",
    )
    stack.kill("app")  # SIGKILL while the agent loop waits on the model
    stack.restart_app()
    stack.wait_app_ready(stack.procs["app"])
    model_server.put("/_control/faults", json=[])
    msg = reply(api, user, mid)
    assert msg["status"] == "answered" and msg["reply"], msg
    second = reply(api, user, send(api, user, "and the next one"))
    assert second["status"] == "answered"
    usage = api.get(f"/v1/agents/{user}/usage").json()["today"]
    assert usage["messages"] == 2  # the interrupted turn was stored once


def test_a_crash_after_a_tool_call_resumes_at_the_next_call(
    api: httpx.Client,
    healthy_stack: Stack,
    model_server: httpx.Client,
    calls_since: Any,
) -> None:
    """v2 journals every call of a turn: a SIGKILL after the tool ran (and while the
    model writes the final answer) neither asks the model for the tool call again nor
    runs the tool again (an append, so running it twice would show)."""
    stack = healthy_stack
    user = uid("journal")
    provision(api, user)
    calls = calls_since(user=user)
    model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 2500}])
    text = 'use tool memory_write with {"key": "log", "value": "once", "append": true}'
    mid = send(api, user, text)
    journal_key = f"agent|{user}|turn|1"
    wait_until(
        lambda: len((state_key(stack, journal_key) or {}).get("calls", {})) >= 2,
        timeout_s=60,
        what="the model's tool call and the tool's result in the turn's journal",
    )
    stack.kill("app")  # SIGKILL while the model writes the final answer
    stack.restart_app()
    stack.wait_app_ready(stack.procs["app"])
    model_server.put("/_control/faults", json=[])
    msg = reply(api, user, mid)
    assert msg["status"] == "answered" and "tool said" in msg["reply"], msg
    assert state_key(stack, f"memory|user:{user}|assistant|log") == "once"  # appended once
    first = next(c for c in calls() if c["status"] == 200)["messages_sha256"]
    assert [c["messages_sha256"] for c in calls()].count(first) == 1  # never asked again
    assert state_key(stack, journal_key) is None  # the journal goes with the stored reply
    usage = api.get(f"/v1/agents/{user}/usage").json()["today"]
    assert usage["messages"] == 1


def test_a_state_store_outage_at_the_end_of_a_turn_pays_the_answer_once(
    api: httpx.Client, healthy_stack: Stack, model_server: httpx.Client, calls_since: Any
) -> None:
    """The model answers while no writer can get into the state store (the chaos
    suite's outage: the SQLite store locked exclusively), so the turn cannot be stored.
    The answer is held and the store waited out: the message is answered with no
    second model call (before, the turn was handed to the workflow, which asked the
    model again once the lease ran out)."""
    stack = healthy_stack
    user = uid("outage")
    provision(api, user)
    calls = calls_since(user=user)
    model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 2000}])
    mid = send(api, user, "a question answered across a state-store outage")
    wait_until(
        lambda: api.get(f"/v1/agents/{user}/messages/{mid}").json()["status"] == "running",
        timeout_s=60,
        what="the turn to start",
    )
    db = sqlite3.connect(stack.app_dir / "swarmd-state.db", timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")  # from here no writer gets in
        wait_until(
            lambda: any(c["status"] == 200 for c in calls()),
            timeout_s=60,
            what="the model to answer during the outage",
        )
        model_server.put("/_control/faults", json=[])
        time.sleep(8)  # the outage: past the store's 5 s busy timeout, so the end fails
        db.execute("ROLLBACK")
    finally:
        db.close()
    msg = reply(api, user, mid)
    assert msg["status"] == "answered" and msg["reply"], msg
    assert len([c for c in calls() if c["status"] == 200]) == 1, calls()
    usage = api.get(f"/v1/agents/{user}/usage").json()["today"]
    assert usage["messages"] == 1


def test_a_failing_model_fails_the_message_and_the_agent_goes_on(
    api: httpx.Client, model_server: httpx.Client
) -> None:
    user = uid("fails")
    provision(api, user)
    model_server.put("/_control/faults", json=[{"model": "*", "status": 400}])
    failed = reply(api, user, send(api, user, "this one the provider refuses"))
    assert failed["status"] == "failed" and "400" in failed["error"], failed
    model_server.put("/_control/faults", json=[])
    answered = reply(api, user, send(api, user, "this one is answered"))
    assert answered["status"] == "answered", answered
    assert api.get(f"/v1/agents/{user}/usage").json()["today"]["messages"] == 2
    memory = api.get(f"/v1/agents/{user}/memory").json()["memory"]
    assert [m["content"] for m in memory if m["role"] == "user"] == ["this one is answered"]


def test_a_wake_the_sidecar_refused_is_delivered_once_it_is_back(
    api: httpx.Client, healthy_stack: Stack
) -> None:
    # A message stored under a lease taken here must wake the user's workflow, which
    # may be idle with no timer. A wake refused while daprd restarts used to be
    # dropped, leaving the message queued for good if the fast path failed too
    # (chaos seed 9). Now it is kept and delivered once the sidecar is back.
    stack = healthy_stack
    user = uid("wake")
    provision(api, user)
    wait_idle(api, user)

    async def scenario() -> None:
        client = DaprWorkflowClient(host="127.0.0.1", port=str(stack.ports.dapr_grpc))
        waker = Waker(client, names.USER_AGENT_WAKE)
        stack.kill("daprd")
        await waker.wake(user)  # refused: nothing listens
        assert waker.pending == {user}
        await asyncio.to_thread(stack.restart_daprd)
        deadline = time.monotonic() + 60
        while waker.pending:  # the retry's own backoff delivers it
            assert time.monotonic() < deadline, "the wake was never delivered"
            await asyncio.sleep(0.1)
        st = await client.get_workflow_state(f"user-agent-{user}", fetch_payloads=False)
        assert st is not None and st.runtime_status == WorkflowStatus.RUNNING
        await waker.wake(uid("nobody"))  # no workflow to wake: nothing kept
        assert not waker.pending
        await waker.close()

    asyncio.run(scenario())
    msg = reply(api, user, send(api, user, "still there?"))
    assert msg["status"] == "answered"
