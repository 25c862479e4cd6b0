"""Engine v2's call journal on the real stack: every call is recorded under its key,
a fresh generation of a run pays for nothing it had finished, purge deletes the
journal, an activity Dapr runs twice at once pays once, and a run started on engine
v1 still finishes after the upgrade to v2."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from swarmd.devstack.launcher import Stack
from swarmd.engine.dapr import DaprClient
from swarmd.engine.journal import Journal, call_key, entry_key
from swarmd.engine.runkeys import SHARDS, RunKeys, shard_key
from swarmd.engine.state import StateStore
from swarmd.errors import JournalUnavailable
from tests.conftest import wait_run, wait_until

pytestmark = pytest.mark.integration

TASK = "List the ways a distributed agent system can lose work"


def start(api: httpx.Client, run_id: str, agents: int, **spec: Any) -> None:
    body: dict[str, Any] = {
        "run_id": run_id,
        "input": {"task": TASK, "agents": agents, "user": run_id},
    }
    if spec:
        body["spec"] = {
            "name": "journaled",
            "pattern": "scatter_gather",
            "agents": [{"name": "analyst", "role": "You analyse one part of a problem."}],
            **spec,
        }
    else:
        body["swarm"] = "scatter_gather"
    r = api.post("/v1/runs", json=body)
    assert r.status_code == 202, r.text


def state(stack: Stack, key: str) -> Any:
    r = httpx.get(f"{stack.dapr_url}/v1.0/state/statestore/{quote(key, safe='')}")
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 and r.content else None


async def ask_model(ms: httpx.AsyncClient, user: str, text: str) -> dict[str, Any]:
    """One call straight to the model server, tagged with ``user`` in its log."""
    body = {"model": "mock-a", "user": user, "messages": [{"role": "user", "content": text}]}
    r = await ms.post("/v1/chat/completions", json=body)
    r.raise_for_status()
    return {"content": r.json()["choices"][0]["message"]["content"]}


def essence(view: dict[str, Any]) -> Any:
    out = view["output"]
    return out["answer"], [(a["agent"], a["content"]) for a in out["agent_results"]]


def test_every_call_is_journaled_and_purge_deletes_the_journal(
    stack: Stack, api: httpx.Client, calls_since: Any
) -> None:
    run_id = "journal-purge"
    calls = calls_since(user=run_id)
    start(api, run_id, agents=5)
    view = wait_run(api, run_id)
    assert view["status"] == "completed", view
    answered = [c for c in calls() if c["status"] == 200]
    assert len(answered) == 7  # planner, 5 agents, reducer: each paid once

    keys = [
        entry_key(run_id, call_key("planner", "planner")),
        entry_key(run_id, call_key("reducer", "reducer")),
        *(entry_key(run_id, call_key(f"agent-{i}", f"agent-{i}")) for i in range(1, 6)),
    ]
    entries = {k: state(stack, k) for k in keys}
    assert all(isinstance(e, dict) and e["result"]["content"] for e in entries.values()), entries
    by_agent = {a["agent"]: a["content"] for a in view["output"]["agent_results"]}
    assert entries[keys[2]]["result"]["content"] == by_agent["agent-1"]

    assert api.delete(f"/v1/runs/{run_id}").status_code == 204
    assert api.get(f"/v1/runs/{run_id}").status_code == 404
    # read every key back: the journal and the run's key index are gone
    assert {k: state(stack, k) for k in keys} == dict.fromkeys(keys)
    assert all(state(stack, shard_key(run_id, n)) is None for n in range(SHARDS))


def test_a_fresh_generation_of_a_run_pays_for_nothing_it_had_finished(
    stack: Stack, api: httpx.Client, calls_since: Any
) -> None:
    """What the run supervisor does to a wedged run: drop its workflow (not its journal)
    and start it again under the same id with the same input."""
    run_id = "journal-generation"
    calls = calls_since(user=run_id)
    start(api, run_id, agents=8)
    first = wait_run(api, run_id)
    assert first["status"] == "completed", first
    paid = len([c for c in calls() if c["status"] == 200])
    assert paid == 10

    wf = f"{stack.dapr_url}/v1.0/workflows/dapr/{run_id}"
    raw_input = httpx.get(wf).json()["properties"]["dapr.workflow.input"]
    assert httpx.post(f"{wf}/purge").status_code < 300  # the workflow only
    wait_until(lambda: api.get(f"/v1/runs/{run_id}").status_code == 404, what="purged")
    r = httpx.post(
        f"{stack.dapr_url}/v1.0/workflows/dapr/swarmd.scatter_gather/start?instanceID={run_id}",
        content=raw_input,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code < 300, r.text
    second = wait_run(api, run_id)
    assert second["status"] == "completed", second
    assert essence(second) == essence(first)
    assert len([c for c in calls() if c["status"] == 200]) == paid  # nothing paid again


def test_live_progress_moves_while_a_group_runs(
    stack: Stack, api: httpx.Client, model_server: httpx.Client
) -> None:
    """One group of 12 agents, 2 calls at a time, 300 ms each: the workflow hears of
    the group only at its end, yet the run's progress moves while it runs."""
    model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 300}])
    run_id = "journal-live"
    start(api, run_id, agents=12, limits={"max_parallel": 2})
    seen = set()

    def moving() -> bool:
        p = api.get(f"/v1/runs/{run_id}").json().get("progress") or {}
        if p.get("phase") == "agents":
            seen.add(p.get("agents_done", 0))
        return len({d for d in seen if 0 < d < 12}) >= 2

    wait_until(moving, timeout_s=60, what="progress to move within the group")
    assert wait_run(api, run_id)["status"] == "completed"


async def test_one_activity_executed_twice_pays_each_call_once(
    stack: Stack, calls_since: Any
) -> None:
    """What daprd does when it restarts under a running activity (chaos seed 11): the
    old execution goes on in the app while the re-dispatched one starts beside it,
    with the same calls, and the second's prefetched journal misses go stale while
    the first answers them (19 calls of one run paid twice)."""
    run_id = "journal-twice"
    calls = calls_since(user=run_id)
    port = stack.ports.dapr_http
    dapr = DaprClient(port, "statestore")
    journal = Journal(StateStore(dapr), RunKeys(dapr))
    keys = [call_key(f"agent-{i}", f"agent-{i}") for i in range(1, 7)]
    await journal.index(run_id, keys)
    async with httpx.AsyncClient(base_url=stack.model_server_url, timeout=30) as ms:

        def calling(i: int) -> Any:
            async def make() -> dict[str, Any]:
                return await ask_model(ms, run_id, f"Subtask {i} of {run_id}")

            return make

        async def execution(known: dict[str, Any]) -> list[dict[str, Any]]:
            return list(
                await asyncio.gather(
                    *(
                        journal.once(run_id, k, {"i": i}, calling(i), indexed=True, known=known)
                        for i, k in enumerate(keys)
                    )
                )
            )

        # three executions of one group, each prefetched before any call was answered:
        # two at once, the third after both (its misses stale)
        stale = [await journal.prefetch(run_id, keys) for _ in range(3)]
        first, second = await asyncio.gather(execution(stale[0]), execution(stale[1]))
        third = await execution(stale[2])
    await dapr.close()
    assert first == second == third
    answered = [c for c in calls() if c["status"] == 200]
    assert len(answered) == len(keys), answered  # each call paid once
    assert all(isinstance(state(stack, entry_key(run_id, k)), dict) for k in keys)


async def test_an_answer_whose_journal_write_failed_is_written_by_the_retry(
    stack: Stack, calls_since: Any
) -> None:
    """The model answers, then the store refuses the entry (the SQLite store locked
    past its 5 s busy timeout, the chaos suite's outage): the call fails and its
    activity is retried. The retry gets the answer this process holds, with no
    second model call, and journals it before returning it, so a crash after the
    retry cannot pay for it again (before, the retry returned it unwritten)."""
    run_id = "journal-unwritten"
    calls = calls_since(user=run_id)
    dapr = DaprClient(stack.ports.dapr_http, "statestore")
    journal = Journal(StateStore(dapr), RunKeys(dapr))
    key = call_key("agent-1", "agent-1")
    db = sqlite3.connect(stack.app_dir / "swarmd-state.db", timeout=30, isolation_level=None)
    async with httpx.AsyncClient(base_url=stack.model_server_url, timeout=30) as ms:

        async def make() -> dict[str, Any]:
            answer = await ask_model(ms, run_id, f"The one call of {run_id}")
            db.execute("BEGIN EXCLUSIVE")  # the model answered; now no writer gets in
            return answer

        async def paid_twice() -> dict[str, Any]:
            raise AssertionError("the retry called the model again")

        try:
            with pytest.raises(JournalUnavailable):
                await journal.once(run_id, key, {"call": 1}, make)
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            db.close()
        again = await journal.once(run_id, key, {"call": 1}, paid_twice)
    await dapr.close()
    assert len([c for c in calls() if c["status"] == 200]) == 1
    entry = state(stack, entry_key(run_id, key))
    assert isinstance(entry, dict) and entry["result"] == again, entry


async def test_a_write_batch_over_one_transaction_is_stored_whole_with_its_ttl(
    stack: Stack,
) -> None:
    """The journal's batched writes go in state transactions of PUT_MANY_CHUNK items:
    a batch larger than one lands whole, every entry readable, each with its TTL."""
    dapr = DaprClient(stack.ports.dapr_http, "statestore")
    items = [(f"journal|batch|k{i:03d}", {"i": i}, 600 if i % 2 else None) for i in range(250)]
    try:
        await dapr.put_many(items)
        found = await dapr.get_items([k for k, _, _ in items])
    finally:
        await dapr.close()
    assert {k: it.value for k, it in found.items()} == {k: v for k, v, _ in items}
    async with httpx.AsyncClient(base_url=stack.dapr_url) as sidecar:
        for key, _, ttl in items[:4]:
            r = await sidecar.get(f"/v1.0/state/statestore/{quote(key, safe='')}")
            assert ("metadata.ttlexpiretime" in r.headers) == (ttl is not None), (key, r.headers)


@pytest.fixture
def old_engine_stack(stack: Stack) -> Iterator[Stack]:
    yield stack
    stack.app_env.pop("SWARMD_ENGINE_VERSION", None)
    stack.kill("app", sig=15)
    stack.restart_app()


@pytest.mark.parametrize("old", ["1", "2"])
def test_a_run_started_on_an_older_engine_finishes_after_the_upgrade(
    old_engine_stack: Stack, api: httpx.Client, old: str
) -> None:
    stack = old_engine_stack
    stack.app_env["SWARMD_ENGINE_VERSION"] = old
    stack.kill("app", sig=15)
    stack.restart_app()
    spec = {"approval": True}
    before, after = f"upgrade-from-v{old}-old", f"upgrade-from-v{old}-new"
    start(api, before, agents=3, **spec)
    wait_until(
        lambda: (
            (api.get(f"/v1/runs/{before}").json().get("progress") or {}).get("phase")
            == "awaiting_approval"
        ),
        what=f"the v{old} run to wait for approval",
    )
    # deploy the default engine (v3) while the old run waits
    stack.app_env.pop("SWARMD_ENGINE_VERSION")
    stack.kill("app", sig=15)
    stack.restart_app()
    start(api, after, agents=3)
    r = api.post(f"/v1/runs/{before}/events/approval", json={"approved": True})
    assert r.status_code in (200, 202), r.text
    was, new = wait_run(api, before), wait_run(api, after)
    assert was["status"] == new["status"] == "completed", (was, new)
    assert was["output"]["approved"] is True
    assert len(was["output"]["agent_results"]) == len(new["output"]["agent_results"]) == 3
    assert all(r["status"] == "answered" for r in was["output"]["agent_results"]), was
    # v1 ran each agent as a child workflow; v2 and v3 run them in a group activity
    assert api.get(f"/v1/runs/{before}.agent-1").status_code == (200 if old == "1" else 404)
    assert api.get(f"/v1/runs/{after}.agent-1").status_code == 404
