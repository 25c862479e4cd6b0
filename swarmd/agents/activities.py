"""Activities of the ``swarmd.user_agent`` workflow: all of its I/O.

* ``poll``: the next unprocessed inbox message and the user's schedules.
* ``begin_turn``: budget check, message marked running, the agent loop's input
  (template + baseline + preferences + skill + conversation memory).
* ``finish_turn``: the reply stored under the message id, usage and memory updated.
* ``fire_job``: a due schedule becomes a message in the user's inbox (once per firing).

``begin_turn`` and ``finish_turn`` run their side effects under the engine's
per-user turn lock (``turn.<user>`` with the ``busy.user.<user>`` marker), so a
turn's side effects never interleave with another turn's and a killed process's
lock is reclaimed by the watchdog.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from dapr.ext.workflow import WorkflowActivityContext

from swarmd.agents.config import Baseline, Effective, Template
from swarmd.agents.notify import notify
from swarmd.agents.rules import agent_input, check_turn, remembered, reply_fields
from swarmd.agents.store import UserStore, now_iso, today
from swarmd.engine import names
from swarmd.engine.models import AgentOutput

POLL = names.USER_AGENT_POLL
BEGIN_TURN = names.USER_AGENT_BEGIN_TURN
FINISH_TURN = names.USER_AGENT_FINISH_TURN
FIRE_JOB = names.USER_AGENT_FIRE_JOB

Activity = Callable[[WorkflowActivityContext, dict[str, Any]], Awaitable[dict[str, Any]]]


def make_activities(
    store: UserStore, baseline: Baseline, templates: dict[str, Template]
) -> dict[str, Activity]:
    async def poll(_: WorkflowActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        user, done = inp["user"], int(inp["done"])
        if await store.get(user, "profile") is None:
            return {"exists": False, "message": None, "schedules": []}
        msg = await store.get(user, "msg", done + 1)
        schedules = await store.get(user, "schedules") or {}
        return {"exists": True, "message": msg, "schedules": list(schedules.values())}

    async def begin_turn(_: WorkflowActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        user, seq = inp["user"], int(inp["seq"])
        async with store.locked(user, turn=True):
            msg = await store.get(user, "msg", seq)
            raw_profile = await store.get(user, "profile")
            if msg is None or raw_profile is None:
                return {"status": "skip"}
            used = (await store.get(user, "usage", today()) or {}).get("tokens", 0)
            eff = check_turn(baseline, templates, raw_profile, msg, used)
            if not isinstance(eff, Effective):
                msg.update(eff)
                await store.put(user, "msg", seq, value=msg)
                notify(user, seq, msg)
                return {"status": eff["status"]}
            memory = await store.get(user, "memory") or []
            msg.update(status="running", started_at=now_iso())
            await store.put(user, "msg", seq, value=msg)
        agent = agent_input(user, eff, memory, msg["text"])
        return {"status": "run", "input": agent.model_dump(mode="json")}

    async def finish_turn(_: WorkflowActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        user, seq = inp["user"], int(inp["seq"])
        out = AgentOutput.model_validate(inp["output"])
        async with store.locked(user, turn=True):
            msg = await store.get(user, "msg", seq)
            raw_profile = await store.get(user, "profile")
            if msg is None or raw_profile is None:
                return {"status": "skip"}
            if msg["status"] != "running":  # a retried finish: already stored
                return {"status": msg["status"]}
            msg.update(reply_fields(out))
            await store.put(user, "msg", seq, value=msg)
            await store.add_usage(user, out.usage.total_tokens, messages=1)
            memory = remembered(
                await store.get(user, "memory") or [], msg["text"], out, baseline.memory_turns
            )
            if memory is not None:
                await store.put(user, "memory", value=memory)
        notify(user, seq, msg)
        return {"status": msg["status"]}

    async def fire_job(_: WorkflowActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        user, sid, fire_at = inp["user"], inp["schedule_id"], inp["fire_at"]
        async with store.locked(user):
            schedules = await store.get(user, "schedules") or {}
            s = schedules.get(sid)
            if s is None or s.get("last_fire_at") == fire_at:  # cancelled, or a retry
                return {"fired": False}
            msg = await store.enqueue(user, s["prompt"], "job", schedule_id=sid, fire_at=fire_at)
            if msg is None:  # deprovisioned meanwhile
                return {"fired": False}
            s.update(last_fire_at=fire_at, fired=int(s.get("fired", 0)) + 1)
            await store.put(user, "schedules", value=schedules)
            await store.add_usage(user, 0, jobs=1)
        return {"fired": True, "message_id": msg["message_id"]}

    return {POLL: poll, BEGIN_TURN: begin_turn, FINISH_TURN: finish_turn, FIRE_JOB: fire_job}
