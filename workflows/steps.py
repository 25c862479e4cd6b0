"""Building blocks shared by the pattern workflows.

All of it runs inside workflow code, so it is deterministic: time comes from
``ctx.current_utc_datetime``, never the clock; no I/O, randomness or logging.
Helpers that call activities or child workflows are generators, used with
``yield from``.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_any
from dapr.ext.workflow._durabletask.task import TaskFailedError

from swarmd.engine import names
from swarmd.engine.journal import call_key
from swarmd.engine.models import (
    AgentGroup,
    AgentInput,
    AgentJob,
    AgentOutput,
    AgentSetup,
    GroupResult,
    LLMRequest,
    LLMResult,
    Progress,
    RunOutput,
    SwarmInput,
    Usage,
)
from swarmd.engine.retry import call_activity
from swarmd.engine.spec import AgentSpec

APPROVAL_EVENT = names.APPROVAL
#: bytes of agent answers a run keeps inline in its history, all agents together
HISTORY_INLINE_BUDGET = 1_000_000
#: engine v2: agents per group activity, and the most group activities one workflow
#: runs (past GROUP_SIZE * MAX_GROUPS agents the groups grow instead, so a workflow's
#: history stays bounded). Part of the v2 wire contract: changing them is a new version.
GROUP_SIZE = 50
MAX_GROUPS = 100
#: engine v3: the same groups, larger (so fewer of them). Each group's completion is an
#: event for the workflow's actor, and Dapr 1.18 stalls a burst of them: a stale
#: ``new-event`` reminder finding the inbox already drained ends the actor's turn and
#: deactivates it, and the events queued behind it are retried a fixed 1 s later
#: (docs/engine.md). 1,000 no-op agents took 1.2-3.2 s in 20 groups. Wire contract of v3.
GROUP_SIZE_V3 = 250
#: agents per group by engine generation
GROUP_SIZES = {2: GROUP_SIZE, 3: GROUP_SIZE_V3}

Job = tuple[AgentSpec, str, str, str]


def plan_groups(n: int, max_parallel: int, group_size: int = GROUP_SIZE) -> tuple[int, int, int]:
    """(agents per group, calls in flight per group, groups in flight) for ``n`` agents
    with at most ``max_parallel`` calls in flight in all, groups of ``group_size``
    agents (more past ``group_size * MAX_GROUPS`` agents)."""
    size = max(1, min(n, max(group_size, -(-n // MAX_GROUPS))))
    per_group = max(1, min(size, max_parallel))
    in_flight = max(1, max_parallel // per_group)
    return size, per_group, in_flight


class Run:
    """Per-run bookkeeping inside a pattern workflow: usage, limits, progress.

    ``engine`` is the engine generation the workflow version was registered with:
    1 runs every agent as an ``agent_loop`` child workflow; 2 runs agents in groups
    inside ``swarmd.run_agents`` activities and journals every call (see
    ``swarmd.activities.agents``); 3 is 2 with larger groups (``GROUP_SIZES``).
    Version 1's and 2's steps are kept exactly as they were, so runs started on
    them replay unchanged."""

    def __init__(
        self,
        ctx: DaprWorkflowContext,
        inp: SwarmInput,
        engine: int = 1,
        *,
        agents_activity: str = names.RUN_AGENTS,
        llm_activity: str = names.CALL_LLM,
    ) -> None:
        self.ctx = ctx
        self.inp = inp
        self.spec = inp.spec
        self.engine = engine
        self.agents_activity = agents_activity
        self.llm_activity = llm_activity
        self.usage = Usage()
        self.started: datetime = ctx.current_utc_datetime
        self.progress = Progress(phase="starting")
        self.budget_agents(len(inp.spec.agents))

    def budget_agents(self, n: int) -> None:
        """Share the history's inline budget between ``n`` agent answers: past their
        share they travel by reference, so even many mid-sized answers together stay
        far below the sidecar's 4 MiB message limit (a reducer's input holds them all)."""
        self.offload_above: int | None = max(1024, HISTORY_INLINE_BUDGET // max(1, n))

    def status(self, **changes: Any) -> None:
        self.progress = self.progress.model_copy(update={**changes, "usage": self.usage})
        self.ctx.set_custom_status(self.progress.model_dump_json())

    def stop_reason(self) -> str | None:
        """Why the run must stop now, if a limit of the spec is reached."""
        limits = self.spec.limits
        if limits.token_budget is not None and self.usage.total_tokens >= limits.token_budget:
            return "token_budget"
        if limits.deadline_s is not None:
            elapsed = self.ctx.current_utc_datetime - self.started
            if elapsed >= timedelta(seconds=limits.deadline_s):
                return "deadline"
        return None

    def llm(
        self, agent: AgentSpec, messages: list[dict[str, Any]], key: str, inline: bool = False
    ) -> Generator[Any, Any, LLMResult]:
        """One LLM call as an activity, with the engine's jittered retries. ``inline``:
        the workflow parses the answer, so it must not come back as a reference."""
        req = LLMRequest(
            run_id=self.inp.run_id,
            agent=agent.name,
            model=agent.model,
            messages=messages,
            user=self.inp.user,
            trace=self.inp.trace,
            call_key=call_key(agent.name, key) if self.engine >= 2 else None,
            inline=inline,
        )
        res = LLMResult.model_validate(
            (yield from call_activity(self.ctx, self.llm_activity, req, self.inp.retry, key=key))
        )
        self.usage = self.usage.add(res.usage)
        return res

    def agent(self, agent: AgentSpec, task: str, key: str, label: str | None = None) -> Any:
        """Start an agent loop as a child workflow; returns its task (not yet awaited)."""
        child = AgentInput(
            run_id=self.inp.run_id,
            agent=label or agent.name,
            role_prompt=agent.role,
            task=task,
            model=agent.model,
            tools=list(agent.tools),
            max_turns=agent.max_turns,
            user=self.inp.user,
            retry=self.inp.retry,
            trace=self.inp.trace,
            offload_above=self.offload_above,
        )
        return self.ctx.call_child_workflow(
            names.AGENT_LOOP, input=child, instance_id=f"{self.ctx.instance_id}.{key}"
        )

    def one_agent(
        self, agent: AgentSpec, task: str, key: str, label: str | None = None
    ) -> Generator[Any, Any, AgentOutput]:
        """Run one agent to its end and return its output (a failure is a failed output)."""
        name = label or agent.name
        if self.engine < 2:
            child = self.agent(agent, task, key, label)
            yield child
            return self.collect(child, name)
        results, _ = yield from self._group([(agent, task, key, name)], 1, None, key)
        return results[0] if results else self._failed(name, "agent was not started")

    def _failed(self, label: str, error: str) -> AgentOutput:
        return AgentOutput.failed(label, error)

    def _group_input(
        self, jobs: list[Job], concurrency: int, tokens_left: int | None
    ) -> AgentGroup:
        setups: list[AgentSetup] = []
        index: dict[str, int] = {}
        out: list[AgentJob] = []
        for agent, task, key, label in jobs:
            if agent.name not in index:
                index[agent.name] = len(setups)
                setups.append(
                    AgentSetup(
                        role_prompt=agent.role,
                        model=agent.model,
                        tools=list(agent.tools),
                        max_turns=agent.max_turns,
                    )
                )
            out.append(AgentJob(agent=label, key=key, task=task, setup=index[agent.name]))
        deadline = None
        if self.spec.limits.deadline_s is not None:
            deadline = (self.started + timedelta(seconds=self.spec.limits.deadline_s)).isoformat()
        return AgentGroup(
            run_id=self.inp.run_id,
            setups=setups,
            jobs=out,
            concurrency=concurrency,
            user=self.inp.user,
            retry=self.inp.retry,
            trace=self.inp.trace,
            offload_above=self.offload_above,
            tokens_left=tokens_left,
            deadline=deadline,
        )

    def _tokens_left(self) -> int | None:
        budget = self.spec.limits.token_budget
        return None if budget is None else max(0, budget - self.usage.total_tokens)

    def _group(
        self, jobs: list[Job], concurrency: int, tokens_left: int | None, key: str
    ) -> Generator[Any, Any, tuple[list[AgentOutput], str | None]]:
        """One group activity, with the engine's retries; its outputs and stop reason."""
        group = self._group_input(jobs, concurrency, tokens_left)
        try:
            raw = yield from call_activity(
                self.ctx, self.agents_activity, group, self.inp.retry, key=f"group/{key}"
            )
        except TaskFailedError as err:
            outs = [self._failed(label, err.details.message) for _, _, _, label in jobs]
            return outs, None
        res = GroupResult.model_validate(raw)
        for o in res.outputs:
            self.usage = self.usage.add(o.usage)
        return res.outputs, res.stopped

    def collect(self, task: Any, label: str) -> AgentOutput:
        """The finished child's output; a failed child becomes a failed result."""
        try:
            out = AgentOutput.model_validate(task.get_result())
        except TaskFailedError as err:
            out = AgentOutput.failed(label, err.details.message)
        self.usage = self.usage.add(out.usage)
        return out

    def bounded(
        self, jobs: list[tuple[AgentSpec, str, str, str]], on_done: Any = None
    ) -> Generator[Any, Any, tuple[list[AgentOutput | None], str | None]]:
        """Run agent jobs ``(agent, task, key, label)`` with at most
        ``limits.max_parallel`` in flight. Stops starting new ones when a limit is
        reached (in-flight ones finish and are kept). Results keep job order."""
        if self.engine >= 2:
            return (yield from self.grouped(jobs, on_done))
        results: list[AgentOutput | None] = [None] * len(jobs)
        pending: dict[Any, int] = {}
        next_i = 0
        done = 0
        stop: str | None = None

        def start(i: int) -> None:
            agent, task, key, label = jobs[i]
            pending[self.agent(agent, task, key, label)] = i

        while next_i < len(jobs) and len(pending) < self.spec.limits.max_parallel:
            start(next_i)
            next_i += 1
        while pending:
            finished = yield when_any(list(pending))
            i = pending.pop(finished)
            results[i] = self.collect(finished, jobs[i][3])
            done += 1
            stop = stop or self.stop_reason()
            if next_i < len(jobs) and stop is None:
                start(next_i)
                next_i += 1
            if on_done is not None:
                on_done(done)
        return results, stop

    def grouped(
        self, jobs: list[Job], on_done: Any = None
    ) -> Generator[Any, Any, tuple[list[AgentOutput | None], str | None]]:
        """Engine v2's ``bounded``: the jobs in groups (see :func:`plan_groups`), at most
        ``max_parallel`` calls in flight in all, groups in flight awaited as a set
        (``when_any`` over a few groups, never over every agent). Stops starting groups
        once a limit is reached; a group itself stops starting agents at the limit."""
        n = len(jobs)
        size, per_group, in_flight = plan_groups(
            n, self.spec.limits.max_parallel, GROUP_SIZES[self.engine]
        )
        batches = [jobs[i : i + size] for i in range(0, n, size)]
        results: list[AgentOutput | None] = [None] * n
        pending: dict[Any, int] = {}
        next_g = 0
        done = 0
        stop: str | None = None

        def start(g: int) -> None:
            group = self._group_input(batches[g], per_group, self._tokens_left())
            task: Any = self.ctx.call_activity(self.agents_activity, input=group)
            pending[task] = g

        while next_g < len(batches) and len(pending) < in_flight:
            start(next_g)
            next_g += 1
        while pending:
            finished = yield when_any(list(pending))
            g = pending.pop(finished)
            batch = batches[g]
            try:
                res = GroupResult.model_validate(finished.get_result())
                outs: list[AgentOutput] = res.outputs
                stop = stop or res.stopped
            except TaskFailedError:
                # the group failed as a whole (the journal's store, say): run it again
                # with the engine's retries; every call it had finished is journaled
                outs, stopped = yield from self._group(
                    batch, per_group, self._tokens_left(), f"g{g}"
                )
                stop = stop or stopped
            else:
                for o in outs:
                    self.usage = self.usage.add(o.usage)
            by_label = {o.agent: o for o in outs}
            base = g * size
            for k, (_, _, _, label) in enumerate(batch):
                results[base + k] = by_label.get(label)
            done += len(outs)
            stop = stop or self.stop_reason()
            if next_g < len(batches) and stop is None:
                start(next_g)
                next_g += 1
            if on_done is not None:
                on_done(done)
        return results, stop

    def finish(
        self,
        answer: str,
        results: list[AgentOutput],
        *,
        rounds: int = 0,
        stop_reason: str | None = None,
    ) -> Generator[Any, Any, dict[str, Any]]:
        """The run's output, after the approval gate if the spec has one."""
        approved: bool | None = None
        if self.spec.approval and stop_reason is None:
            self.status(phase="awaiting_approval")
            event = yield self.ctx.wait_for_external_event(APPROVAL_EVENT)
            approved = bool(event.get("approved", True)) if isinstance(event, dict) else True
        self.status(phase="done" if stop_reason is None else f"stopped:{stop_reason}")
        return RunOutput(
            swarm=self.spec.name,
            pattern=self.spec.pattern,
            answer=answer,
            agent_results=results,
            usage=self.usage,
            failed_agents=sum(1 for r in results if r.status == "failed"),
            rounds=rounds,
            stop_reason=stop_reason,
            approved=approved,
        ).model_dump()
