"""``swarmd.user_agent.turn`` (workflow v2): a user agent's whole turn in one activity.

Workflow v1 pays, per message, a ``poll`` activity, ``begin_turn``, an agent-loop
child workflow with an activity per model call and per tool call,
``finish_turn``, two lock holds with markers and three continue-as-new
generations: about 240 ms of CPU across the stack. v2 does the same work in one
activity with three state-store round trips:

1. one bulk read of the user's records (profile, inbox counter, the message,
   schedules, today's and total usage, memory, key index, the turn's journal);
2. the message marked ``running``, guarded by the message's ETag;
3. the model/tool loop of :mod:`swarmd.workflows.agent_loop`, run here;
4. one transaction that stores the reply, usage and memory and drops the turn's
   journal, guarded by the profile's ETag.

Invariants:

* **Each call is paid once.** Every call of a turn has a deterministic key
  ``assistant/m<seq>/<turn>/<call>`` (call 0 is the model, 1..n the tool calls it
  asked for; no attempt number, no time). A model answer that asks for tools and
  every tool result go into the turn's journal (``agent|<u>|turn|<seq>``) before
  the loop goes on; the final answer goes into the message itself by step 4. A
  re-execution of the activity (Dapr re-running it after a crash, or the
  engine's retry) answers journaled calls from the journal and makes only the
  rest; a message already final is returned as it is.
* **Nothing lands after deprovisioning.** Step 4 rewrites the profile with its
  ETag: once the profile is deleted (or changed by a PATCH, then it is re-read
  and retried), the transaction applies nothing. Step 2's message ETag does the
  same for the ``running`` mark.
* **One turn at a time per user**: the workflow runs this activity for one
  message at a time, and the journal and usage records are written by it only.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from dapr.ext.workflow import WorkflowActivityContext
from pydantic import BaseModel, ConfigDict, Field

from swarmd.agents.config import Baseline, Effective, Template
from swarmd.agents.notify import notify
from swarmd.agents.rules import FINAL, agent_input, check_turn, remembered, reply_fields
from swarmd.agents.store import MEMORY_AGENT, key, message_id, now_iso, today, usage_plus
from swarmd.engine import names
from swarmd.engine.models import AgentInput, AgentOutput, LLMRequest, LLMResult, Usage
from swarmd.engine.state import Entry, Op, StateStore
from swarmd.errors import GuardrailBlocked, NonRetryableActivityError, RetryableActivityError
from swarmd.workflows.agent_loop import Conversation

TURN = names.USER_AGENT_TURN
FAIL_TURN = names.USER_AGENT_FAIL_TURN
#: how often the end-of-turn transaction is re-read and retried when an ETag moved
COMMIT_ATTEMPTS = 8

LLMFn = Callable[[WorkflowActivityContext, LLMRequest], Awaitable[LLMResult]]
ToolFn = Callable[[WorkflowActivityContext, dict[str, Any]], Awaitable[dict[str, Any]]]
Activity = Callable[[WorkflowActivityContext, dict[str, Any]], Awaitable[dict[str, Any]]]


class TurnRequest(BaseModel):
    """Input of ``turn``: answer the message after ``done``, if it is there."""

    model_config = ConfigDict(extra="forbid")
    user: str
    done: int = Field(ge=0)


class FailRequest(BaseModel):
    """Input of ``fail_turn``: message ``seq`` ran out of retries with ``error``."""

    model_config = ConfigDict(extra="forbid")
    user: str
    seq: int = Field(ge=1)
    error: str


class TurnResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: False once the user is deprovisioned (the workflow ends)
    exists: bool
    schedules: list[dict[str, Any]] = Field(default_factory=list)
    #: the message this step ended (answered, failed, budget_exhausted), None if none
    seq: int | None = None
    status: str | None = None
    #: a later message was already in the inbox when the turn started
    more: bool = False


def call_key(seq: int, turn: int, call: int) -> str:
    """The journal key of one call of message ``seq``'s turn: ``<agent>/<step>/<turn>/<call>``."""
    return f"{MEMORY_AGENT}/{message_id(seq)}/{turn}/{call}"


def fingerprint(request: Any) -> str:
    """A stable digest of what a call asks: a journal entry only answers the same call."""
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class CallJournal:
    """The calls of one turn, kept in one record (only this turn writes it)."""

    def __init__(self, state: StateStore, full_key: str, entries: dict[str, Any]) -> None:
        self.state = state
        self.key = full_key
        self.entries = dict(entries)
        self.stored = bool(entries)
        self._mu = asyncio.Lock()

    async def once(
        self,
        ckey: str,
        request: Any,
        make: Callable[[], Awaitable[dict[str, Any]]],
        keep: Callable[[dict[str, Any]], bool] = lambda _: True,
    ) -> dict[str, Any]:
        """The journaled result of call ``ckey``, else ``make()``'s, journaled before it
        is returned when ``keep(result)`` (the final answer is stored with the reply)."""
        fp = fingerprint(request)
        entry = self.entries.get(ckey)
        if isinstance(entry, dict) and entry.get("fp") == fp:
            return dict(entry["result"])
        result = await make()
        if keep(result):
            async with self._mu:  # tool calls finish concurrently: one write at a time
                self.entries[ckey] = {"fp": fp, "result": result}
                await self.state.put(self.key, {"calls": self.entries})
                self.stored = True
        return result

    def usage(self) -> Usage:
        """What the journaled model calls used."""
        total = Usage()
        for ckey, entry in self.entries.items():
            if ckey.endswith("/0") and isinstance(entry, dict):
                total = total.add(Usage.model_validate(entry["result"]["usage"]))
        return total


class _Keys:
    """The state keys one turn step reads or writes."""

    def __init__(self, user: str, seq: int, day: str) -> None:
        self.profile = key(user, "profile")
        self.counter = key(user, "seq")
        self.schedules = key(user, "schedules")
        self.msg = key(user, "msg", seq)
        self.usage_day = key(user, "usage", day)
        self.usage = key(user, "usage")
        self.memory = key(user, "memory")
        self.index = key(user, "index")
        self.journal = key(user, "turn", seq)

    def all(self) -> list[str]:
        return list(vars(self).values())


def make_turn_activities(
    state: StateStore,
    baseline: Baseline,
    templates: dict[str, Template],
    llm: LLMFn,
    tool: ToolFn,
) -> dict[str, Activity]:
    """``turn`` and ``fail_turn`` around the clients the entrypoint made."""

    async def run_agent(
        ctx: WorkflowActivityContext, inp: AgentInput, seq: int, journal: CallJournal
    ) -> AgentOutput:
        """The agent loop of ``swarmd.workflows.agent_loop``, each call journaled."""
        conv = Conversation(inp)
        for turn in range(1, inp.max_turns + 1):
            req = conv.request()

            async def ask(req: LLMRequest = req) -> dict[str, Any]:
                return (await llm(ctx, req)).model_dump()

            try:
                raw = await journal.once(
                    call_key(seq, turn, 0),
                    {"model": req.model, "messages": req.messages, "tools": req.tools},
                    ask,
                    keep=lambda r: bool(r.get("tool_calls")),
                )
            except NonRetryableActivityError as exc:
                return conv.failed(turn, exc.message, isinstance(exc, GuardrailBlocked))
            res = LLMResult.model_validate(raw)
            out = conv.answered(turn, res)
            if out is not None:
                return out
            outputs = await asyncio.gather(
                *(
                    journal.once(
                        call_key(seq, turn, i),
                        {"name": t["name"], "arguments": t["arguments"]},
                        functools.partial(tool, ctx, t),
                    )
                    for i, t in enumerate(conv.tool_inputs(res), start=1)
                )
            )
            conv.tool_results(res, list(outputs))
        return conv.out_of_turns()

    async def end_turn(
        user: str,
        seq: int,
        out: AgentOutput,
        snap: dict[str, Entry] | None,
        msg: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Store the turn's end in one transaction guarded by the profile's ETag; the
        message as it ended (None: the user or the message is gone)."""
        fields = reply_fields(out)
        for _ in range(COMMIT_ATTEMPTS):
            k = _Keys(user, seq, today())
            if snap is None or k.usage_day not in snap:  # retry, or the day changed mid-turn
                snap = await state.get_many(k.all())
                msg = snap[k.msg].value
                if msg is not None and msg["status"] in FINAL:
                    return dict(msg)  # another execution of this turn ended it
            profile = snap[k.profile]
            if profile.value is None or msg is None:
                return None
            ended = {**msg, **fields}
            ops = [
                Op(k.profile, profile.value, etag=profile.etag),
                Op(k.msg, ended),
                Op(k.usage_day, usage_plus(snap[k.usage_day].value, out.usage.total_tokens, 1)),
                Op(k.usage, usage_plus(snap[k.usage].value, out.usage.total_tokens, 1)),
            ]
            memory = remembered(snap[k.memory].value or [], msg["text"], out, baseline.memory_turns)
            if memory is not None:
                ops.append(Op(k.memory, memory))
            index = snap[k.index]
            indexed = list(index.value) if isinstance(index.value, list) else []
            if k.usage_day not in indexed:
                ops.append(
                    Op(k.index, [*indexed, k.usage_day], etag=index.etag, create=index.etag is None)
                )
            ops.append(Op(k.journal, delete=True))
            if await state.transact(ops):
                return ended
            snap = None  # an ETag moved (a PATCH, a memory tool's index entry): re-read
        raise RetryableActivityError(f"turn m{seq} of {user!r}: its records kept changing")

    async def turn(ctx: WorkflowActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
        req = TurnRequest.model_validate(raw)
        user, seq = req.user, req.done + 1
        k = _Keys(user, seq, today())
        snap = await state.get_many(k.all())
        raw_profile = snap[k.profile].value
        if raw_profile is None:
            return TurnResult(exists=False).model_dump()
        schedules = list((snap[k.schedules].value or {}).values())
        latest = int(snap[k.counter].value or 0)
        entry = snap[k.msg]
        if entry.value is None:
            return TurnResult(exists=True, schedules=schedules, more=latest > req.done).model_dump()
        msg = dict(entry.value)

        def result(status: str) -> dict[str, Any]:
            return TurnResult(
                exists=True, schedules=schedules, seq=seq, status=status, more=latest > seq
            ).model_dump()

        if msg["status"] in FINAL:  # a re-execution after the turn was stored
            return result(msg["status"])
        used = (snap[k.usage_day].value or {}).get("tokens", 0)
        eff = check_turn(baseline, templates, raw_profile, msg, used)
        if not isinstance(eff, Effective):
            msg.update(eff)
            if not await state.transact([Op(k.msg, msg, etag=entry.etag)]):
                raise RetryableActivityError(f"message m{seq} of {user!r} changed under its turn")
            notify(user, seq, msg)
            return result(msg["status"])
        if msg["status"] == "queued":
            msg.update(status="running", started_at=now_iso())
            if not await state.transact([Op(k.msg, msg, etag=entry.etag)]):
                raise RetryableActivityError(f"message m{seq} of {user!r} changed under its turn")
        inp = agent_input(user, eff, snap[k.memory].value or [], msg["text"])
        journal = CallJournal(state, k.journal, (snap[k.journal].value or {}).get("calls") or {})
        out = await run_agent(ctx, inp, seq, journal)
        ended = await end_turn(user, seq, out, snap, msg)
        if ended is None:
            return result("skip")
        notify(user, seq, ended)
        return result(ended["status"])

    async def fail_turn(_: WorkflowActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
        req = FailRequest.model_validate(raw)
        k = _Keys(req.user, req.seq, today())
        snap = await state.get_many(k.all())
        msg = snap[k.msg].value
        if msg is None or msg["status"] in FINAL:
            return {"seq": req.seq if msg is not None else None, "status": "skip"}
        journal = CallJournal(state, k.journal, (snap[k.journal].value or {}).get("calls") or {})
        out = AgentOutput.failed(MEMORY_AGENT, req.error, usage=journal.usage())
        ended = await end_turn(req.user, req.seq, out, snap, dict(msg))
        if ended is None:
            return {"seq": req.seq, "status": "skip"}
        notify(req.user, req.seq, ended)
        return {"seq": req.seq, "status": ended["status"]}

    return {TURN: turn, FAIL_TURN: fail_turn}
