"""The ``swarmd.run_agents`` activity (engine v2): a group of agents in one activity.

Engine v1 made every agent a child workflow with an activity per step, and paid
Dapr's per-step machinery (workflow state, scheduler reminders, gRPC) for each
one; that capped a scatter-gather near 25 agents/s on two cores. Engine v2
runs up to G agents of a run concurrently inside one activity (asyncio, the
shared ``openai`` client), ``concurrency`` calls in flight at once.

Each agent is the same loop as ``swarmd.agent_loop``: an LLM call per turn,
the tools it asks for, until it answers or reaches ``max_turns``. Durability
moves from workflow history to the call journal (:mod:`swarmd.engine.journal`):
every LLM and tool call is journaled under ``<agent>/<step>/<turn>/<call>``
as it completes, so when Dapr runs the group again (a crash, a lost
completion) every finished call is answered from the journal and the group
resumes at the call that was in flight, never at the group's start.

Failure rules (the same outcomes as v1's agent loop):

* a gateway error that stays retryable after the run's retry policy, or a
  non-retryable one, makes **that agent** ``failed``; the group goes on;
* a guardrail block is non-retryable too, so it fails only its agent;
* a state-store failure (the journal cannot be read or written) fails the
  **activity**: the workflow retries the group with backoff, and the journal
  makes everything already answered free;
* a limit (tokens left for the run, its deadline) stops the group starting
  new agents; those running finish and are kept, like v1's ``bounded``;
* terminate and pause reach the group through :class:`swarmd.engine.gate.RunGate`:
  a terminated run's group starts nothing more and its agents stop at their next
  turn (``stopped: "terminated"``; Dapr drops the result anyway); a paused run's
  group starts no agent until it is resumed (agents already started finish their
  turns). Calls already in flight finish;
* at most ``max_agents`` agents run at once in a process (``SWARMD_AGENTS_MAX_IN_FLIGHT``,
  all groups together); the others wait before building anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dapr.ext.workflow import WorkflowActivityContext
from openai import AsyncOpenAI

from swarmd import telemetry
from swarmd.activities.llm import LLMObserver, complete, tool_step
from swarmd.activities.tools import TOOL_SCHEMAS, ToolDeps, use_tool
from swarmd.engine.gate import RunGate
from swarmd.engine.journal import Journal, Prefetched, call_key
from swarmd.engine.live import LiveProgress
from swarmd.engine.models import (
    AgentGroup,
    AgentJob,
    AgentOutput,
    GroupResult,
    LLMRequest,
    LLMResult,
    ToolRequest,
    Usage,
)
from swarmd.engine.payloads import PayloadStore
from swarmd.engine.retry import backoff_delay
from swarmd.errors import (
    GatewayUnreachable,
    GuardrailBlocked,
    NonRetryableActivityError,
    RetryableActivityError,
)

#: how long a call keeps waiting for a gateway it cannot reach at all (a LiteLLM proxy
#: restart took 86-110 s on a loaded machine; the retry policy alone gives up after ~31 s)
UNREACHABLE_PATIENCE_S = 600.0

#: How one agent's LLM call is made: (request, parent workflow id) -> result dict.
#: The real one goes through the gateway; the engine-ceiling benchmark plugs in a no-op.
CallModel = Callable[[LLMRequest, str], Awaitable[dict[str, Any]]]


class _AgentFailed(Exception):
    """An agent's call failed for good (after retries): the agent is ``failed``, or
    ``blocked`` when a gateway guardrail refused it."""

    def __init__(self, message: str, blocked: bool = False) -> None:
        super().__init__(message)
        self.blocked = blocked


@dataclass(frozen=True)
class AgentRunner:
    """Everything a group needs, built by the entrypoint."""

    journal: Journal
    call_model: CallModel
    tools: ToolDeps | None = None
    obs: LLMObserver | None = None
    live: LiveProgress | None = None
    gate: RunGate | None = None
    #: agents of this process running at once, all groups together (None: no bound)
    max_agents: int | None = None
    _slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _slot(self) -> asyncio.Semaphore | contextlib.nullcontext[None]:
        """A place among the process's running agents (see ``max_agents``)."""
        if self.max_agents is None:
            return contextlib.nullcontext()
        return self._slots.setdefault(
            asyncio.get_running_loop(), asyncio.Semaphore(self.max_agents)
        )

    async def run_group(self, group: AgentGroup, workflow_id: str) -> GroupResult:
        """Run the group's agents; ``workflow_id``: the workflow that scheduled it."""
        sem = asyncio.Semaphore(group.concurrency)
        spent = 0
        finished = 0
        stopped: str | None = None
        outputs: list[AgentOutput | None] = [None] * len(group.jobs)
        deadline = datetime.fromisoformat(group.deadline) if group.deadline else None
        # one index write and one read for every agent's first call (most agents make
        # only that one): a group run again after a crash finds its answers at once
        first = [call_key(j.agent, j.key, 1, 0) for j in group.jobs]
        await self.journal.index(group.run_id, first)
        known = await self.journal.prefetch(group.run_id, first)

        def limit() -> str | None:
            if group.tokens_left is not None and spent >= group.tokens_left:
                return "token_budget"
            if deadline is not None and datetime.now(UTC) >= deadline:
                return "deadline"
            return None

        async def one(i: int, job: AgentJob) -> None:
            nonlocal spent, stopped, finished
            async with sem:
                if stopped is None:
                    stopped = limit()
                # waits out a pause; False once the run is terminated
                if (
                    stopped is None
                    and self.gate is not None
                    and not await self.gate.wait_open(workflow_id)
                ):
                    stopped = "terminated"
                if stopped is not None:
                    return
                async with self._slot():
                    out = await self.run_agent(group, job, known, workflow_id)
                spent += out.usage.total_tokens
                outputs[i] = out
                finished += 1
                if self.live is not None:
                    self.live.done(group.run_id, group.jobs[0].key, finished)

        await asyncio.gather(*(one(i, j) for i, j in enumerate(group.jobs)))
        if self.live is not None:
            await self.live.finish(group.run_id, group.jobs[0].key)
        return GroupResult(outputs=[o for o in outputs if o is not None], stopped=stopped)

    async def run_agent(
        self,
        group: AgentGroup,
        job: AgentJob,
        known: Prefetched | None,
        workflow_id: str,
    ) -> AgentOutput:
        """One agent's loop; every call journaled. Its span covers the whole loop."""
        started = datetime.now(UTC)
        instance = f"{group.run_id}.{job.key}"
        out = await self._loop(group, job, instance, known, workflow_id)
        if group.trace:
            telemetry.agent_span(
                self._tracer(),
                {
                    "run_id": group.run_id,
                    "agent": job.agent,
                    "trace": group.trace,
                    "model": group.setups[job.setup].model,
                },
                instance,
                started,
                datetime.now(UTC),
                out.model_dump(),
                None,
            )
        return out

    def _tracer(self) -> Any:
        return self.obs.tracer() if self.obs is not None else telemetry.global_tracer()

    async def _loop(
        self,
        group: AgentGroup,
        job: AgentJob,
        instance: str,
        known: Prefetched | None,
        workflow_id: str,
    ) -> AgentOutput:
        setup = group.setups[job.setup]
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": setup.role_prompt},
            {"role": "user", "content": job.task},
        ]
        tools = [{"type": "function", "function": TOOL_SCHEMAS[t]} for t in setup.tools] or None
        usage = Usage()
        last = ""
        for turn in range(1, setup.max_turns + 1):
            # turn 1 was let through by the group; a pause is not waited out mid-agent
            if turn > 1 and self.gate is not None and await self.gate.ended(workflow_id):
                return AgentOutput.failed(
                    job.agent, "the run was terminated", content=last, turns=turn - 1, usage=usage
                )
            req = LLMRequest(
                run_id=group.run_id,
                agent=job.agent,
                model=setup.model,
                messages=messages,
                tools=tools,
                user=group.user,
                trace=group.trace,
                offload_above=group.offload_above,
                call_key=call_key(job.agent, job.key, turn, 0),
            )
            try:
                raw = await self._retrying(
                    group, req.call_key or "", self._llm(req, instance, known)
                )
            except _AgentFailed as err:
                return AgentOutput.failed(
                    job.agent, str(err), content=last, turns=turn, usage=usage, blocked=err.blocked
                )
            res = LLMResult.model_validate(raw)
            usage = usage.add(res.usage)
            last = res.content or last
            if not res.tool_calls:
                return AgentOutput(
                    agent=job.agent,
                    status="answered",
                    content=res.content or "",
                    turns=turn,
                    usage=usage,
                    content_chars=res.content_chars,
                )
            messages.append(
                {
                    "role": "assistant",
                    "content": res.content,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in res.tool_calls
                    ],
                }
            )
            results = await asyncio.gather(
                *(
                    self._tool(
                        group,
                        ToolRequest(
                            run_id=group.run_id,
                            agent=job.agent,
                            name=c.name,
                            arguments=c.arguments,
                            allowed=setup.tools,
                            user=group.user,
                        ),
                        call_key(job.agent, job.key, turn, k + 1),
                    )
                    for k, c in enumerate(res.tool_calls)
                )
            )
            for c, result in zip(res.tool_calls, results, strict=True):
                messages.append(
                    {"role": "tool", "tool_call_id": c.id, "content": json.dumps(result)}
                )
        return AgentOutput(
            agent=job.agent, status="max_turns", content=last, turns=setup.max_turns, usage=usage
        )

    def _llm(
        self, req: LLMRequest, instance: str, known: Prefetched | None
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        fp_request = {"model": req.model, "messages": req.messages, "tools": req.tools}

        async def attempt() -> dict[str, Any]:
            return await self.journal.once(
                req.run_id,
                req.call_key,
                fp_request,
                lambda: self.call_model(req, instance),
                indexed=req.call_key is not None and req.call_key.endswith("/1/0"),
                known=known,
            )

        return attempt

    async def _tool(self, group: AgentGroup, req: ToolRequest, key: str) -> dict[str, Any]:
        if self.tools is None:
            return {"error": "tools are not available in this process"}
        deps = self.tools

        async def make() -> dict[str, Any]:
            with tool_step(
                self.obs,
                run_id=req.run_id,
                agent=req.agent,
                name=req.name,
                workflow_id=f"{req.run_id}.{key.split('/')[1]}",
                carrier=group.trace,
            ) as span:
                out = await use_tool(deps, req)
                if "error" in out:
                    span.set_attribute("error.type", "tool_error")
                return out

        async def attempt() -> dict[str, Any]:
            return await self.journal.once(
                req.run_id, key, {"name": req.name, "arguments": req.arguments}, make
            )

        try:
            return await self._retrying(group, key, attempt)
        except _AgentFailed as err:
            return {"error": str(err)}

    async def _retrying(
        self, group: AgentGroup, key: str, attempt: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """``attempt()`` under the run's retry policy (jittered backoff). Gateway failures
        that stay failed become :class:`_AgentFailed`; state-store failures raise."""
        spec = group.retry
        n = 1
        unreachable_since: float | None = None
        while True:
            try:
                return await attempt()
            except NonRetryableActivityError as exc:
                raise _AgentFailed(str(exc), isinstance(exc, GuardrailBlocked)) from exc
            except GatewayUnreachable as exc:
                # never sent: wait out a gateway restart, however many attempts it takes
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > UNREACHABLE_PATIENCE_S:
                    raise _AgentFailed(str(exc)) from exc
                await asyncio.sleep(backoff_delay(spec, min(n, 8), f"{group.run_id}/{key}/{n}"))
                n += 1
            except RetryableActivityError as exc:
                if n >= spec.max_attempts:
                    raise _AgentFailed(str(exc)) from exc
                await asyncio.sleep(backoff_delay(spec, n, f"{group.run_id}/{key}/{n}"))
                n += 1


def gateway_model(
    client: AsyncOpenAI,
    payloads: PayloadStore | None,
    obs: LLMObserver | None,
    guardrails: Sequence[str],
    max_in_flight: int,
) -> CallModel:
    """The real :data:`CallModel`: one chat completion through the gateway (``guardrails``:
    the operator's optional user-input guardrails, asked for on every call).

    At most ``max_in_flight`` calls of this process are on the wire at once
    (``SWARMD_LLM_MAX_IN_FLIGHT``): the rest wait here, cheaply, instead of in the
    HTTP client's connection pool, whose bookkeeping grows with every waiter (a
    1,000-call fan-out spent a fifth of the app's CPU there)."""
    gates: dict[int, asyncio.Semaphore] = {}

    async def call(req: LLMRequest, instance: str) -> dict[str, Any]:
        gate = gates.setdefault(id(asyncio.get_running_loop()), asyncio.Semaphore(max_in_flight))
        async with gate:
            out = await complete(client, req, payloads, obs, instance, guardrails)
            return out.model_dump()

    return call


def make_run_agents(
    runner: AgentRunner,
) -> Callable[[WorkflowActivityContext, AgentGroup], Awaitable[dict[str, Any]]]:
    """Build the ``swarmd.run_agents`` activity around a runner made by the entrypoint."""

    async def run_agents(ctx: WorkflowActivityContext, group: AgentGroup) -> dict[str, Any]:
        g = AgentGroup.model_validate(group)
        if not g.jobs:
            raise NonRetryableActivityError("a group needs at least one job", field="jobs")
        return (await runner.run_group(g, ctx.workflow_id)).model_dump()

    return run_agents
