"""``swarmd.user_agent``: one long-lived agent per user (instance ``user-agent-<user>``).

Two versions are registered (``swarmd.engine.runtime.WORKFLOWS``); both carry the
same small state across continue-as-new (the last processed message and each
schedule's next fire time), so a v1 generation continues as a v2 one.

**v2** (:func:`user_agent_v2`, what new generations run): a loop of steps, each
one activity, ``turn`` (:mod:`swarmd.agents.turn`): it answers the message after
``done`` if there is one (the whole agent loop inside, every call journaled) and
reports the schedules and whether a later message is already waiting. Between
steps the workflow fires due schedules (``fire_job``) and, with nothing to do,
waits for ``wake`` or the next schedule's durable timer. It continues as new
after ``STEPS_PER_GENERATION`` steps, or after a wait that had a timer pending,
so its history stays bounded. A message costs one wake event and one activity.

**v1** (:func:`user_agent`, kept for generations started before the upgrade):
each generation does one thing, then continues as new:

1. ``poll``: the next inbox message after ``done`` (the inbox in the state store
   is the source of truth; the ``wake`` event is only a wake-up, so an event
   raised between generations is never needed again).
2. A message: ``begin_turn`` -> the durable agent loop as a child workflow ->
   ``finish_turn``. Messages are taken strictly in order, one at a time: one
   active turn per user.
3. A due schedule: ``fire_job`` puts its prompt into the inbox.
4. Nothing to do: wait for ``wake`` or the next schedule's durable timer. While
   it waits the agent holds no process and no memory; it is a row in the state
   store and, with schedules, a reminder in the Dapr scheduler.

Deterministic: no clocks, randomness, I/O or logging (time is
``ctx.current_utc_datetime``).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any
from dapr.ext.workflow._durabletask.task import TaskFailedError
from pydantic import BaseModel, ConfigDict, Field

from swarmd.agents.activities import BEGIN_TURN, FINISH_TURN, FIRE_JOB, POLL
from swarmd.agents.turn import FAIL_TURN, SWEEP, TURN
from swarmd.engine import names
from swarmd.engine.models import AgentOutput, RetrySpec
from swarmd.engine.retry import call_activity

WAKE_EVENT = names.USER_AGENT_WAKE
#: v2: steps (activities) per generation before it continues as new; each step adds
#: about six history events, so a generation's history stays under ~250 events
STEPS_PER_GENERATION = 40


class UserAgentState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str
    done: int = 0
    #: schedule id -> next fire time (ISO, UTC)
    next_at: dict[str, str] = Field(default_factory=dict)


def next_fire(schedule: dict[str, Any], now: datetime) -> datetime:
    """The first fire time of ``schedule`` strictly after ``now``."""
    every = schedule.get("every_s")
    if every:
        return now + timedelta(seconds=float(every))
    hh, mm = (int(x) for x in str(schedule["daily_at"]).split(":"))
    at = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


def _aware(dt: datetime, ref: datetime) -> datetime:
    return dt.replace(tzinfo=ref.tzinfo) if dt.tzinfo is None else dt


def user_agent(
    ctx: DaprWorkflowContext, raw: dict[str, Any]
) -> Generator[Any, Any, dict[str, Any] | None]:
    st = UserAgentState.model_validate(raw)
    retry = RetrySpec()
    polled = yield from call_activity(
        ctx, POLL, {"user": st.user, "done": st.done}, retry, key=f"poll/{st.done}"
    )
    if not polled["exists"]:
        return {"status": "deprovisioned", "done": st.done}
    now = ctx.current_utc_datetime
    schedules = {s["id"]: s for s in polled["schedules"]}
    next_at = _next_at(schedules, st.next_at, now)
    msg = polled["message"]
    if msg is not None:
        seq = int(msg["seq"])
        ctx.set_custom_status(json.dumps({"phase": "turn", "seq": seq, "done": st.done}))
        begin = yield from call_activity(
            ctx, BEGIN_TURN, {"user": st.user, "seq": seq}, retry, key=f"begin/{seq}"
        )
        if begin["status"] == "run":
            try:
                out = yield ctx.call_child_workflow(
                    names.AGENT_LOOP, input=begin["input"], instance_id=f"{ctx.instance_id}.t{seq}"
                )
            except TaskFailedError as err:
                out = AgentOutput.failed("assistant", err.details.message).model_dump()
            yield from call_activity(
                ctx,
                FINISH_TURN,
                {"user": st.user, "seq": seq, "output": out},
                retry,
                key=f"finish/{seq}",
            )
        ctx.continue_as_new(UserAgentState(user=st.user, done=seq, next_at=next_at).model_dump())
        return None
    due = sorted(sid for sid, t in next_at.items() if _aware(datetime.fromisoformat(t), now) <= now)
    for sid in due:
        yield from call_activity(
            ctx,
            FIRE_JOB,
            {"user": st.user, "schedule_id": sid, "fire_at": next_at[sid]},
            retry,
            key=f"job/{sid}/{next_at[sid]}",
        )
        next_at[sid] = next_fire(schedules[sid], now).isoformat()
    if due:
        ctx.continue_as_new(
            UserAgentState(user=st.user, done=st.done, next_at=next_at).model_dump()
        )
        return None
    ctx.set_custom_status(json.dumps({"phase": "idle", "seq": None, "done": st.done}))
    wake = ctx.wait_for_external_event(WAKE_EVENT)
    if next_at:
        first = min(_aware(datetime.fromisoformat(t), now) for t in next_at.values())
        yield when_any([wake, ctx.create_timer(first)])
    else:
        yield wake
    ctx.continue_as_new(UserAgentState(user=st.user, done=st.done, next_at=next_at).model_dump())
    return None


def _next_at(
    schedules: dict[str, dict[str, Any]], carried: dict[str, str], now: datetime
) -> dict[str, str]:
    return {sid: carried.get(sid) or next_fire(s, now).isoformat() for sid, s in schedules.items()}


def _fire_due(
    ctx: DaprWorkflowContext,
    user: str,
    listed: list[dict[str, Any]],
    carried: dict[str, str],
    retry: RetrySpec,
) -> Generator[Any, Any, tuple[dict[str, str], list[str]]]:
    """v2/v3: fire every schedule that is due (``fire_job`` each, in id order); the next
    fire times and the ids fired."""
    now = ctx.current_utc_datetime
    schedules = {s["id"]: s for s in listed}
    next_at = _next_at(schedules, carried, now)
    due = sorted(sid for sid, t in next_at.items() if _aware(datetime.fromisoformat(t), now) <= now)
    for sid in due:
        yield from call_activity(
            ctx,
            FIRE_JOB,
            {"user": user, "schedule_id": sid, "fire_at": next_at[sid]},
            retry,
            key=f"job/{sid}/{next_at[sid]}",
        )
        next_at[sid] = next_fire(schedules[sid], now).isoformat()
    return next_at, due


def user_agent_v2(
    ctx: DaprWorkflowContext, raw: dict[str, Any]
) -> Generator[Any, Any, dict[str, Any] | None]:
    st = UserAgentState.model_validate(raw)
    user, done, next_at = st.user, st.done, dict(st.next_at)
    retry = RetrySpec()
    for _ in range(STEPS_PER_GENERATION):
        ctx.set_custom_status(json.dumps({"phase": "turn", "seq": done + 1, "done": done}))
        try:
            res = yield from call_activity(
                ctx, TURN, {"user": user, "done": done}, retry, key=f"turn/{done}"
            )
        except TaskFailedError as err:  # out of retries: the message fails, the agent goes on
            failed = yield from call_activity(
                ctx,
                FAIL_TURN,
                {"user": user, "seq": done + 1, "error": err.details.message},
                retry,
                key=f"fail/{done + 1}",
            )
            if failed["seq"] is None:  # no message to blame: a real fault, as in v1
                raise
            done = int(failed["seq"])
            continue
        if not res["exists"]:
            return {"status": "deprovisioned", "done": done}
        if res["seq"] is not None:
            done = int(res["seq"])
        now = ctx.current_utc_datetime
        next_at, due = yield from _fire_due(ctx, user, res["schedules"], next_at, retry)
        if res["more"] or due:
            continue
        ctx.set_custom_status(json.dumps({"phase": "idle", "seq": None, "done": done}))
        wake = ctx.wait_for_external_event(WAKE_EVENT)
        if next_at:
            first = min(_aware(datetime.fromisoformat(t), now) for t in next_at.values())
            yield when_any([wake, ctx.create_timer(first)])
            break  # a fresh generation: the timer still pending is dropped with the history
        yield wake
    ctx.continue_as_new(UserAgentState(user=user, done=done, next_at=next_at).model_dump())
    return None


def user_agent_v3(
    ctx: DaprWorkflowContext, raw: dict[str, Any]
) -> Generator[Any, Any, dict[str, Any] | None]:
    """v3: the durable owner behind the fast path (``swarmd.agents.fastpath``).

    Messages are answered in the app as they arrive by the process holding the
    user's turn lease; this workflow answers (in ``sweep``) only what no live
    process does, and while a process holds a valid lease it sweeps again when the
    lease ends (a durable timer), so the messages of a process that died are
    answered then. It fires schedules as v2 does, and continues as new after
    ``STEPS_PER_GENERATION`` steps or after a wait with a timer pending.
    """
    st = UserAgentState.model_validate(raw)
    user, done, next_at = st.user, st.done, dict(st.next_at)
    retry = RetrySpec()
    for _ in range(STEPS_PER_GENERATION):
        ctx.set_custom_status(json.dumps({"phase": "sweep", "seq": done + 1, "done": done}))
        try:
            res = yield from call_activity(
                ctx, SWEEP, {"user": user, "done": done}, retry, key=f"sweep/{done}"
            )
        except TaskFailedError as err:  # out of retries: the message fails, the agent goes on
            failed = yield from call_activity(
                ctx,
                FAIL_TURN,
                {"user": user, "seq": done + 1, "error": err.details.message, "leased": True},
                retry,
                key=f"fail/{done + 1}",
            )
            if failed["seq"] is None:
                raise
            done = max(done, int(failed["seq"]))
            continue
        if not res["exists"]:
            return {"status": "deprovisioned", "done": done}
        done = max(done, int(res["done"]))
        now = ctx.current_utc_datetime
        next_at, due = yield from _fire_due(ctx, user, res["schedules"], next_at, retry)
        if res["more"] or due:
            continue
        ctx.set_custom_status(json.dumps({"phase": "idle", "seq": None, "done": done}))
        timers = [_aware(datetime.fromisoformat(t), now) for t in next_at.values()]
        if res["wait_s"] is not None:  # a process answers: look again when its lease ends
            timers.append(now + timedelta(seconds=float(res["wait_s"])))
            yield ctx.create_timer(min(timers))  # wake-ups meanwhile wait: the sweep reads all
            continue
        wake = ctx.wait_for_external_event(WAKE_EVENT)
        if timers:
            yield when_any([wake, ctx.create_timer(min(timers))])
            break  # a fresh generation: the timer still pending is dropped with the history
        yield wake
    ctx.continue_as_new(UserAgentState(user=user, done=done, next_at=next_at).model_dump())
    return None
