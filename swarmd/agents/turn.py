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
  rest; a message already final is returned as it is. Until the turn is stored,
  every answer is also held in this process (:class:`Answers`, shared by the
  fast path and the workflow worker): a turn whose end could not be stored (the
  state store down) waits that out with the answer in hand, and a retry of the
  turn in this process pays nothing again even for the final answer.
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
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from dapr.ext.workflow import WorkflowActivityContext
from pydantic import BaseModel, ConfigDict, Field

from swarmd.agents.config import Baseline, Effective, Template
from swarmd.agents.lease import SAFETY_S, WORKFLOW, Lease
from swarmd.agents.notify import notify
from swarmd.agents.rules import FINAL, agent_input, check_turn, remembered, reply_fields
from swarmd.agents.store import MEMORY_AGENT, key, message_id, now_iso, today, usage_plus
from swarmd.engine import names
from swarmd.engine.models import AgentInput, AgentOutput, LLMRequest, LLMResult, Usage
from swarmd.engine.state import Entry, Op, StateStore
from swarmd.errors import (
    DependencyUnavailable,
    GuardrailBlocked,
    NonRetryableActivityError,
    RetryableActivityError,
)
from swarmd.workflows.agent_loop import Conversation

TURN = names.USER_AGENT_TURN
FAIL_TURN = names.USER_AGENT_FAIL_TURN
SWEEP = names.USER_AGENT_SWEEP
#: the workflow version whose sweep watches the turn lease (the fast path needs it)
VERSION = "v3"
#: messages one ``sweep`` answers before the workflow takes a step (history stays small)
SWEEP_TURNS = 20
#: how often the end-of-turn transaction is re-read and retried when an ETag moved
COMMIT_ATTEMPTS = 8
#: how long the end of a turn whose calls were answered waits out a state store that
#: cannot be reached (the answer is held in memory meanwhile; see :class:`Answers`)
COMMIT_PATIENCE_S = 120.0
#: longest wait between two tries of the end of a turn while the store is down
COMMIT_RETRY_MAX_S = 2.0
#: answers :class:`Answers` holds, and for how long at most
ANSWERS_MAX = 4096
ANSWERS_S = 300.0

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
    #: v3: the message is the one after the lease's ``done`` (at least ``seq``)
    leased: bool = False


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
    #: v3: the answerer does not (or no longer) hold the turn lease; nothing was stored
    lost: bool = False


class SweepResult(BaseModel):
    """Output of ``sweep`` (v3)."""

    model_config = ConfigDict(extra="forbid")
    exists: bool
    schedules: list[dict[str, Any]] = Field(default_factory=list)
    #: the last message that reached a final status
    done: int = 0
    #: an app process holds a valid lease: sweep again after this many seconds
    wait_s: float | None = None
    #: more messages may be waiting: sweep again now
    more: bool = False


def call_key(seq: int, turn: int, call: int) -> str:
    """The journal key of one call of message ``seq``'s turn: ``<agent>/<step>/<turn>/<call>``."""
    return f"{MEMORY_AGENT}/{message_id(seq)}/{turn}/{call}"


def fingerprint(request: Any) -> str:
    """A stable digest of what a call asks: a journal entry only answers the same call."""
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Answers:
    """The answers this process got for turns not stored yet, by (turn journal key,
    call key): what a retry of the turn here takes instead of paying again.

    Invariants: an answer is only served for the same request (its fingerprint);
    at most :data:`ANSWERS_MAX` answers, none older than :data:`ANSWERS_S`; a stored
    turn's answers are dropped (:meth:`forget`). One per process, shared by the
    turns of the API's loop (the fast path) and of the worker's: so guarded by a
    thread lock, never held across an await."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._items: OrderedDict[tuple[str, str], tuple[str, dict[str, Any], float]] = OrderedDict()
        #: calls being made, by (event loop, turn, call key): (fingerprint, done)
        self._inflight: dict[tuple[int, str, str], tuple[str, asyncio.Future[None]]] = {}

    async def once(
        self, turn: str, ckey: str, fp: str, make: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """The held answer of the call, else ``make()``'s (then held). Two executions of
        one turn at once in this process (Dapr re-delivers a sweep after a daprd
        restart while the first still runs) make each call once: the second waits for
        the first's answer, and makes the call itself only if the first failed."""
        loop = asyncio.get_running_loop()
        slot = (id(loop), turn, ckey)
        while True:
            held = self.get(turn, ckey, fp)
            if held is not None:
                return held
            with self._mu:
                other = self._inflight.get(slot)
                if other is None or other[0] != fp:
                    mine: asyncio.Future[None] = loop.create_future()
                    self._inflight[slot] = (fp, mine)
                    break
            await asyncio.shield(other[1])  # then its answer is held, or it failed
        try:
            result = await make()
            self.put(turn, ckey, fp, result)
            return result
        finally:
            with self._mu:
                if self._inflight.get(slot, ("", None))[1] is mine:
                    del self._inflight[slot]
            mine.set_result(None)

    def get(self, turn: str, ckey: str, fp: str) -> dict[str, Any] | None:
        with self._mu:
            item = self._items.get((turn, ckey))
        if item is None or item[0] != fp or time.monotonic() - item[2] > ANSWERS_S:
            return None
        return dict(item[1])

    def put(self, turn: str, ckey: str, fp: str, result: dict[str, Any]) -> None:
        with self._mu:
            self._items[(turn, ckey)] = (fp, dict(result), time.monotonic())
            self._items.move_to_end((turn, ckey))
            while len(self._items) > ANSWERS_MAX:
                self._items.popitem(last=False)

    def forget(self, turn: str) -> None:
        with self._mu:
            for k in [k for k in self._items if k[0] == turn]:
                del self._items[k]


class CallJournal:
    """The calls of one turn, kept in one record (only this turn writes it), and held
    in this process's :class:`Answers` until the turn is stored."""

    def __init__(
        self,
        state: StateStore,
        full_key: str,
        entries: dict[str, Any],
        answers: Answers | None = None,
    ) -> None:
        self.state = state
        self.key = full_key
        self.entries = dict(entries)
        self.stored = bool(entries)
        self.answers = answers if answers is not None else Answers()
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
        result = await self.answers.once(self.key, ckey, fp, make)  # held before the write
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
        self.lease = key(user, "lease")

    def all(self) -> list[str]:
        return list(vars(self).values())


class Held:
    """The turn lease as this answerer last wrote or read it (v3; see
    :mod:`swarmd.agents.lease`): the end-of-turn transaction is guarded by its ETag."""

    def __init__(self, owner: str, lease: Lease, etag: str | None) -> None:
        self.owner = owner
        self.lease = lease
        self.etag = etag


AnswerFn = Callable[[WorkflowActivityContext, str, int, "Held | None"], Awaitable["TurnResult"]]


class Turns:
    """One user's turn, answered by whoever holds the turn lease (v3), or by the v2
    workflow's ``turn`` activity (no lease). Built around the clients of one event loop:
    the workflow worker's (activities) or the API's (the fast path)."""

    def __init__(
        self,
        state: StateStore,
        baseline: Baseline,
        templates: dict[str, Template],
        llm: LLMFn,
        tool: ToolFn,
        lease_s: float,
        answers: Answers | None = None,
    ) -> None:
        self.state, self.baseline, self.templates = state, baseline, templates
        self.llm, self.tool, self.lease_s = llm, tool, lease_s
        #: this process's answers of turns not stored yet (share one per process)
        self.answers = answers if answers is not None else Answers()
        self.answer, self.activities = _build(self)


def _build(t: Turns) -> tuple[AnswerFn, dict[str, Activity]]:
    """The closures of :class:`Turns` around its clients."""
    state, baseline, templates, llm, tool, lease_s, answers = (
        t.state,
        t.baseline,
        t.templates,
        t.llm,
        t.tool,
        t.lease_s,
        t.answers,
    )

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
        held: Held | None = None,
    ) -> dict[str, Any] | None:
        """Store the turn's end in one transaction guarded by the profile's ETag (and,
        with ``held``, the lease's: its ``done`` moves to ``seq``); the message as it
        ended (None: the user or the message is gone, or the lease was lost)."""
        fields = reply_fields(out)
        for _ in range(COMMIT_ATTEMPTS):
            k = _Keys(user, seq, today())
            if snap is None or k.usage_day not in snap:  # retry, or the day changed mid-turn
                snap = await state.get_many(k.all())
                msg = snap[k.msg].value
                if msg is not None and msg["status"] in FINAL:
                    return dict(msg)  # another execution of this turn ended it
                if held is not None:
                    lease = Lease.of(snap[k.lease].value)
                    if lease.owner != held.owner:
                        return None  # lost: whoever holds it now answers this message
                    held.lease, held.etag = lease, snap[k.lease].etag
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
            if held is not None:
                moved = held.lease.model_copy(update={"done": max(held.lease.done, seq)})
                ops.append(Op(k.lease, moved.dump(), etag=held.etag, create=held.etag is None))
            if await state.transact(ops):
                if held is not None:
                    held.lease, held.etag = moved, None  # the new ETag is unknown: re-read
                return ended
            snap = None  # an ETag moved (a PATCH, a memory tool's index entry): re-read
        raise RetryableActivityError(f"turn m{seq} of {user!r}: its records kept changing")

    async def stored(
        user: str,
        seq: int,
        out: AgentOutput,
        snap: dict[str, Entry] | None,
        msg: dict[str, Any] | None,
        held: Held | None,
    ) -> dict[str, Any] | None:
        """:func:`end_turn`, tried again for up to :data:`COMMIT_PATIENCE_S` while the
        state store cannot be reached: the turn's answer is paid for and held here, so
        waiting is cheaper than handing the turn on (whoever answers it next would
        pay for the final answer again). A try after a failed one re-reads everything:
        the failed transaction may have landed (then the message is final already)."""
        since, n = time.monotonic(), 0
        while True:
            try:
                return await end_turn(user, seq, out, snap if n == 0 else None, msg, held)
            except DependencyUnavailable:
                if time.monotonic() - since >= COMMIT_PATIENCE_S:
                    raise
                n += 1
                await asyncio.sleep(min(COMMIT_RETRY_MAX_S, 0.1 * 2**n) * random.uniform(0.5, 1))

    def advance(k: _Keys, held: Held | None, seq: int) -> list[Op]:
        """The lease's ``done`` moved to ``seq``, in the same transaction (v3)."""
        if held is None or held.lease.done >= seq:
            return []
        moved = held.lease.model_copy(update={"done": seq})
        return [Op(k.lease, moved.dump(), etag=held.etag, create=held.etag is None)]

    async def keepalive(user: str, held: Held) -> None:
        """Extend ``held``'s lease every third of a lease while a turn runs (a long model
        call or tool): nobody takes a valid lease, so nobody makes the call again."""
        lkey = key(user, "lease")
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                e = (await state.get_many([lkey]))[lkey]
                lease = Lease.of(e.value)
                if lease.owner != held.owner:
                    return
                longer = lease.taken(held.owner, lease_s)
                if await state.transact([Op(lkey, longer.dump(), etag=e.etag)]):
                    held.lease, held.etag = longer, None  # the commit re-reads for the ETag
            except DependencyUnavailable:  # the store is away: try again a third later
                continue

    async def answer(
        ctx: WorkflowActivityContext, user: str, done: int, held: Held | None = None
    ) -> TurnResult:
        """Answer the message after ``done``, if there is one. With ``held`` (v3) only
        while ``held.owner`` holds the turn lease (``lost`` otherwise); ``done`` is then
        at least the lease's. Without (the v2 ``turn`` activity) never while an app
        process holds a valid lease: that process answers."""
        while True:
            seq = done + 1
            k = _Keys(user, seq, today())
            snap = await state.get_many(k.all())
            raw_profile = snap[k.profile].value
            if raw_profile is None:
                return TurnResult(exists=False)
            schedules = list((snap[k.schedules].value or {}).values())
            latest = int(snap[k.counter].value or 0)
            le = snap[k.lease]
            lease = Lease.of(le.value)
            if held is not None:
                if lease.done > done:
                    done = lease.done
                    continue
                if not lease.held_by(held.owner):
                    return TurnResult(exists=True, schedules=schedules, lost=True)
                held.lease, held.etag = lease, le.etag
            elif lease.owner not in (None, WORKFLOW) and lease.valid():
                return TurnResult(exists=True, schedules=schedules)  # a process answers
            elif lease.watched is not None:  # a v2 generation: no fast path until v3 sweeps
                await state.transact(
                    [Op(k.lease, lease.model_copy(update={"watched": None}).dump(), etag=le.etag)]
                )
            break
        entry = snap[k.msg]
        if entry.value is None:
            return TurnResult(exists=True, schedules=schedules, more=latest > done)
        msg = dict(entry.value)

        def result(status: str) -> TurnResult:
            return TurnResult(
                exists=True, schedules=schedules, seq=seq, status=status, more=latest > seq
            )

        if msg["status"] in FINAL:  # a re-execution after the turn was stored
            if ops := advance(k, held, seq):
                await state.transact(ops)  # best effort: the next commit moves it anyway
            return result(msg["status"])
        used = (snap[k.usage_day].value or {}).get("tokens", 0)
        eff = check_turn(baseline, templates, raw_profile, msg, used)
        if not isinstance(eff, Effective):
            msg.update(eff)
            if not await state.transact([Op(k.msg, msg, etag=entry.etag), *advance(k, held, seq)]):
                raise RetryableActivityError(f"message m{seq} of {user!r} changed under its turn")
            notify(user, seq, msg)
            return result(msg["status"])
        if msg["status"] == "queued":
            msg.update(status="running", started_at=now_iso())
            if not await state.transact([Op(k.msg, msg, etag=entry.etag)]):
                raise RetryableActivityError(f"message m{seq} of {user!r} changed under its turn")
        inp = agent_input(user, eff, snap[k.memory].value or [], msg["text"])
        journal = CallJournal(
            state, k.journal, (snap[k.journal].value or {}).get("calls") or {}, answers
        )
        # kept alive until the turn is stored: while the end waits out a store outage
        # with the answer in hand, nobody else may take the turn and pay for it again
        keeper = asyncio.create_task(keepalive(user, held)) if held is not None else None
        try:
            out = await run_agent(ctx, inp, seq, journal)
            ended = await stored(user, seq, out, snap, msg, held)
        finally:
            if keeper is not None:
                keeper.cancel()
        answers.forget(k.journal)
        if ended is None:
            return result("skip").model_copy(update={"lost": held is not None})
        notify(user, seq, ended)
        return result(ended["status"])

    async def turn(ctx: WorkflowActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
        req = TurnRequest.model_validate(raw)
        res = await answer(ctx, req.user, req.done)
        return res.model_dump(exclude={"lost"})

    async def sweep(ctx: WorkflowActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
        """v3's step: answer what no live app process is answering, as the lease's
        ``workflow`` owner; report when to look again (``wait_s``: a process holds a
        valid lease) and whether more is waiting."""
        req = TurnRequest.model_validate(raw)
        user, done = req.user, req.done
        keys = [key(user, p) for p in ("profile", "seq", "schedules", "lease")]
        for _ in range(SWEEP_TURNS):
            snap = await state.get_many(keys)
            if snap[keys[0]].value is None:
                return SweepResult(exists=False, done=done).model_dump()
            schedules = list((snap[keys[2]].value or {}).values())
            counter, le = snap[keys[1]], snap[keys[3]]
            latest, lease = int(counter.value or 0), Lease.of(le.value)
            done = max(done, lease.done)
            watched = lease.model_copy(update={"watched": VERSION})
            if lease.owner not in (None, WORKFLOW) and lease.valid():  # an app process answers
                if lease.watched != VERSION:
                    await state.transact([Op(keys[3], watched.dump(), etag=le.etag)])
                    continue
                wait = lease.left_s() + SAFETY_S
                return SweepResult(
                    exists=True, schedules=schedules, done=done, wait_s=wait
                ).model_dump()
            if latest <= done:  # nothing to answer: free the lease unless a message came
                if lease.owner is None and lease.watched == VERSION:
                    return SweepResult(exists=True, schedules=schedules, done=done).model_dump()
                ops = [
                    Op(keys[3], watched.released().dump(), etag=le.etag, create=le.etag is None),
                    Op(keys[1], counter.value or 0, etag=counter.etag, create=counter.etag is None),
                ]
                if await state.transact(ops):
                    return SweepResult(exists=True, schedules=schedules, done=done).model_dump()
                continue
            if not watched.held_by(WORKFLOW):
                mine = watched.taken(WORKFLOW, lease_s)
                ops = [Op(keys[3], mine.dump(), etag=le.etag, create=le.etag is None)]
                if not await state.transact(ops):
                    continue
            res = await answer(ctx, user, done, Held(WORKFLOW, watched, None))
            if not res.exists:
                return SweepResult(exists=False, done=done).model_dump()
            if res.seq is not None:
                done = max(done, res.seq)
        return SweepResult(exists=True, done=done, more=True).model_dump()

    async def fail_turn(_: WorkflowActivityContext, raw: dict[str, Any]) -> dict[str, Any]:
        req = FailRequest.model_validate(raw)
        seq = req.seq
        if req.leased:  # v3: the message the lease is at, whatever the workflow knew
            lkey = key(req.user, "lease")
            seq = max(seq, Lease.of(await state.get(lkey)).done + 1)
        k = _Keys(req.user, seq, today())
        snap = await state.get_many(k.all())
        msg = snap[k.msg].value
        if msg is None or msg["status"] in FINAL:
            return {"seq": seq if msg is not None else None, "status": "skip"}
        held = None
        if req.leased:
            held = Held(WORKFLOW, Lease.of(snap[k.lease].value), snap[k.lease].etag)
            held.lease = held.lease.taken(WORKFLOW, lease_s)  # ours: the sweep took it
        journal = CallJournal(
            state, k.journal, (snap[k.journal].value or {}).get("calls") or {}, answers
        )
        out = AgentOutput.failed(MEMORY_AGENT, req.error, usage=journal.usage())
        ended = await end_turn(req.user, seq, out, snap, dict(msg), held)
        if ended is None:
            return {"seq": seq, "status": "skip"}
        notify(req.user, seq, ended)
        return {"seq": seq, "status": ended["status"]}

    return answer, {TURN: turn, FAIL_TURN: fail_turn, SWEEP: sweep}
