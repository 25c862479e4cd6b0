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
from swarmd.engine.models import (
    AgentInput,
    AgentOutput,
    LLMRequest,
    LLMResult,
    Progress,
    RunOutput,
    SwarmInput,
    Usage,
)
from swarmd.engine.retry import call_activity
from swarmd.engine.spec import AgentSpec

APPROVAL_EVENT = "approval"
#: bytes of agent answers a run keeps inline in its history, all agents together
HISTORY_INLINE_BUDGET = 1_000_000


class Run:
    """Per-run bookkeeping inside a pattern workflow: usage, limits, progress."""

    def __init__(self, ctx: DaprWorkflowContext, inp: SwarmInput) -> None:
        self.ctx = ctx
        self.inp = inp
        self.spec = inp.spec
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
        self, agent: AgentSpec, messages: list[dict[str, Any]], key: str
    ) -> Generator[Any, Any, LLMResult]:
        """One LLM call as an activity, with the engine's jittered retries."""
        req = LLMRequest(
            run_id=self.inp.run_id,
            agent=agent.name,
            model=agent.model,
            messages=messages,
            user=self.inp.user,
            trace=self.inp.trace,
        )
        res = LLMResult.model_validate(
            (yield from call_activity(self.ctx, names.CALL_LLM, req, self.inp.retry, key=key))
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

    def collect(self, task: Any, label: str) -> AgentOutput:
        """The finished child's output; a failed child becomes a failed result."""
        try:
            out = AgentOutput.model_validate(task.get_result())
        except TaskFailedError as err:
            out = AgentOutput(
                agent=label,
                status="failed",
                content="",
                turns=0,
                usage=Usage(),
                error=err.details.message,
            )
        self.usage = self.usage.add(out.usage)
        return out

    def bounded(
        self, jobs: list[tuple[AgentSpec, str, str, str]], on_done: Any = None
    ) -> Generator[Any, Any, tuple[list[AgentOutput | None], str | None]]:
        """Run agent jobs ``(agent, task, key, label)`` with at most
        ``limits.max_parallel`` in flight. Stops starting new ones when a limit is
        reached (in-flight ones finish and are kept). Results keep job order."""
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
