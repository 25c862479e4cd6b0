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

from swarmd.agents.config import Baseline, Profile, Template, effective
from swarmd.agents.notify import notify
from swarmd.agents.store import MEMORY_AGENT, UserStore, instance_id, now_iso, today
from swarmd.engine.models import AgentInput, AgentOutput
from swarmd.errors import ValidationFailed

POLL = "swarmd.user_agent.poll"
BEGIN_TURN = "swarmd.user_agent.begin_turn"
FINISH_TURN = "swarmd.user_agent.finish_turn"
FIRE_JOB = "swarmd.user_agent.fire_job"

Activity = Callable[[WorkflowActivityContext, dict[str, Any]], Awaitable[dict[str, Any]]]


def memory_prompt(memory: list[dict[str, str]]) -> str:
    if not memory:
        return ""
    lines = [f"{m['role']}: {m['content']}" for m in memory]
    return "\n\nConversation so far:\n" + "\n".join(lines)


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
            profile = Profile.model_validate(raw_profile)
            template = templates.get(profile.template)
            if template is None:
                msg.update(status="failed", error=f"template {profile.template!r} is gone")
                await store.put(user, "msg", seq, value=msg)
                return {"status": "failed"}
            try:
                eff = effective(baseline, template, profile, msg.get("skill"))
            except ValidationFailed as exc:  # e.g. the skill was removed after the message
                msg.update(status="failed", error=exc.message, answered_at=now_iso())
                await store.put(user, "msg", seq, value=msg)
                notify(user, seq)
                return {"status": "failed"}
            used = (await store.get(user, "usage", today()) or {}).get("tokens", 0)
            if used >= eff.max_daily_tokens:
                msg.update(
                    status="budget_exhausted",
                    error=(
                        f"daily token budget exhausted: {used} of {eff.max_daily_tokens} tokens "
                        "used today (UTC); it resets at 00:00 UTC"
                    ),
                    answered_at=now_iso(),
                )
                await store.put(user, "msg", seq, value=msg)
                notify(user, seq)
                return {"status": "budget_exhausted"}
            memory = await store.get(user, "memory") or []
            msg.update(status="running", started_at=now_iso())
            await store.put(user, "msg", seq, value=msg)
        agent = AgentInput(
            run_id=instance_id(user),
            agent=MEMORY_AGENT,
            role_prompt=eff.system_prompt + memory_prompt(memory),
            task=msg["text"],
            model=eff.model,
            tools=eff.tools,
            max_turns=eff.max_turns,
            user=user,
        )
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
            answered = out.status != "failed"
            msg.update(
                status="answered" if answered else "failed",
                reply=out.content,
                error=out.error,
                usage={"tokens": out.usage.total_tokens, "calls": out.usage.calls},
                answered_at=now_iso(),
            )
            await store.put(user, "msg", seq, value=msg)
            await store.add_usage(user, out.usage.total_tokens, messages=1)
            keep = baseline.memory_turns
            if answered and keep:
                memory = await store.get(user, "memory") or []
                memory += [
                    {"role": "user", "content": msg["text"]},
                    {"role": "assistant", "content": out.content},
                ]
                await store.put(user, "memory", value=memory[-2 * keep :])
        notify(user, seq)
        return {"status": msg["status"]}

    async def fire_job(_: WorkflowActivityContext, inp: dict[str, Any]) -> dict[str, Any]:
        user, sid, fire_at = inp["user"], inp["schedule_id"], inp["fire_at"]
        async with store.locked(user):
            schedules = await store.get(user, "schedules") or {}
            s = schedules.get(sid)
            if s is None or s.get("last_fire_at") == fire_at:  # cancelled, or a retry
                return {"fired": False}
            msg = await store.enqueue(user, s["prompt"], "job", schedule_id=sid, fire_at=fire_at)
            s.update(last_fire_at=fire_at, fired=int(s.get("fired", 0)) + 1)
            await store.put(user, "schedules", value=schedules)
            await store.add_usage(user, 0, jobs=1)
        return {"fired": True, "message_id": msg["message_id"]}

    return {POLL: poll, BEGIN_TURN: begin_turn, FINISH_TURN: finish_turn, FIRE_JOB: fire_job}
