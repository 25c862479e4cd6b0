"""Workflow v3's fast path under SIGKILL: every accepted message is answered exactly once.

Messages are answered in the app as they arrive (``swarmd.agents.fastpath``); the
user's workflow is the durable owner that answers what a dead process left. Here
several users each have a turn in flight (its first model call answered and
journaled, the second one waiting on the model) and a second message queued
behind it when processes of the stack are killed. Afterwards every message is
answered once, in order; the tool ran once; and no model call answered more than
a second before the kill was answered again (the model server's log, by user).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from swarmd.devstack.launcher import Stack
from tests.conftest import wait_until
from tests.integration.test_user_agents import provision, reply, send, state_key, uid

pytestmark = pytest.mark.integration

USERS = 6
#: a call answered this long before the kill had time to be journaled
SETTLE_S = 1.0
TOOL_TEXT = 'use tool memory_write with {"key": "log", "value": "once", "append": true}'


def restart(stack: Stack, targets: list[str]) -> None:
    for t in targets:
        stack.kill(t)  # SIGKILL: nothing in the process runs
    if "scheduler" in targets:
        stack.restart_scheduler()
    if "daprd" in targets:
        stack.start_daprd()
    if "app" in targets:
        stack.restart_app()
    stack.wait_app_ready(stack.procs["app"])


@pytest.mark.parametrize("targets", [["app"], ["app", "daprd"], ["scheduler"]], ids="+".join)
def test_fast_path_messages_survive_sigkill_answered_once(
    api: httpx.Client,
    stack: Stack,
    model_server: httpx.Client,
    calls_since: Any,
    targets: list[str],
) -> None:
    users = [uid("fastcrash") for _ in range(USERS)]
    for u in users:
        provision(api, u)
    for u in users:  # the first message: afterwards the v3 workflow watches the lease
        assert reply(api, u, send(api, u, "hello"))["status"] == "answered"
    wait_until(
        lambda: all((state_key(stack, f"agent|{u}|lease") or {}).get("watched") for u in users),
        timeout_s=60,
        what="every user's v3 workflow to watch its turn lease",
    )
    marks = {u: calls_since(user=u) for u in users}
    # 4 s a call: every user's final call is in flight at once, with room for the polls
    # below to see all six mid-turn (once a turn ends its journal is gone)
    model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 4000}])
    first = {u: send(api, u, TOOL_TEXT) for u in users}
    second = {u: send(api, u, f"and then a plain question from {u}") for u in users}
    wait_until(
        lambda: all(
            len((state_key(stack, f"agent|{u}|turn|2") or {}).get("calls", {})) >= 2 for u in users
        ),
        timeout_s=60,
        what="each turn's tool call and tool result in its journal (in the fast path)",
    )
    kill_ts = time.time()
    restart(stack, targets)
    model_server.put("/_control/faults", json=[])

    t_restart = time.time()
    repeats = 0
    for u in users:
        a, b = reply(api, u, first[u]), reply(api, u, second[u])
        assert a["status"] == "answered" and "tool said" in a["reply"], a
        assert b["status"] == "answered", b
        assert a["answered_at"] <= b["started_at"], (a, b)  # in order, one at a time
        assert state_key(stack, f"memory|user:{u}|assistant|log") == "once"  # the tool ran once
        assert api.get(f"/v1/agents/{u}/usage").json()["today"]["messages"] == 3
        calls = [c for c in marks[u]() if c["status"] == 200]
        answered = Counter(c["messages_sha256"] for c in calls)
        settled = {
            c["messages_sha256"]
            for c in calls
            if c["ts"] + c.get("latency_ms", 0) / 1000 < kill_ts - SETTLE_S
        }
        again = {h: n for h, n in answered.items() if h in settled and n > 1}
        assert not again, f"{u}: calls answered before the kill were paid again: {again}"
        repeats += sum(n - 1 for n in answered.values())
    print(
        f"\n{'+'.join(targets)} killed with {USERS} turns in flight and {USERS} queued: all "
        f"answered once, {time.time() - t_restart:.1f}s after the restart; {repeats} calls "
        "made again (in flight at the kill), none answered before it"
    )
