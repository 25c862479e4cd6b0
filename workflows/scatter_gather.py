"""``swarmd.scatter_gather``: planner, N agents in parallel, reducer.

1. A planner LLM call splits the task into exactly N subtasks.
2. N agent loops (child workflows) run with at most ``max_parallel`` in flight;
   progress (agents done / total) is published as the custom status.
3. A reducer LLM call merges the agents' answers into one.

Deterministic: no clocks, randomness, I/O or logging here.
"""

from __future__ import annotations

import re
from collections.abc import Generator
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
    ScatterGatherInput,
    Usage,
)
from swarmd.engine.retry import call_activity

PLANNER_PROMPT = (
    "You are the planner of a team of {n} agents. Split the task below into exactly {n} "
    "subtasks that can be worked on independently. Answer with one subtask per line, "
    "numbered 1 to {n}, and nothing else."
)
REDUCER_PROMPT = (
    "You are the reducer. Merge the answers of {n} agents to the task below into one "
    "coherent final answer."
)
_NUMBERED = re.compile(r"^\s*(\d+)[.)]\s+(.*\S)\s*$")


def parse_subtasks(text: str, n: int, task: str) -> list[str]:
    """Exactly ``n`` subtasks from the planner's answer, padded if it gave fewer."""
    found = [m.group(2) for line in text.splitlines() if (m := _NUMBERED.match(line))]
    if not found:
        found = [line.strip() for line in text.splitlines() if line.strip()]
    subtasks = found[:n]
    for i in range(len(subtasks), n):
        subtasks.append(f"Part {i + 1} of {n} of: {task}")
    return subtasks


def _status(ctx: DaprWorkflowContext, progress: Progress) -> None:
    ctx.set_custom_status(progress.model_dump_json())


def scatter_gather(
    ctx: DaprWorkflowContext, raw: dict[str, Any]
) -> Generator[Any, Any, dict[str, Any]]:
    inp = ScatterGatherInput.model_validate(raw)
    n = inp.agents
    usage = Usage()
    _status(ctx, Progress(phase="planning", agents_total=n))

    plan_req = LLMRequest(
        run_id=inp.run_id,
        agent="planner",
        model=inp.planner_model,
        user=inp.user,
        messages=[
            {"role": "system", "content": PLANNER_PROMPT.format(n=n)},
            {"role": "user", "content": inp.task},
        ],
    )
    plan = LLMResult.model_validate(
        (yield from call_activity(ctx, names.CALL_LLM, plan_req, inp.retry, key="planner"))
    )
    usage = usage.add(plan.usage)
    subtasks = parse_subtasks(plan.content or "", n, inp.task)

    results: list[AgentOutput | None] = [None] * n
    pending: dict[Any, int] = {}
    next_i = 0
    done = 0

    def start(i: int) -> None:
        agent = AgentInput(
            run_id=inp.run_id,
            agent=f"agent-{i + 1}",
            role_prompt=inp.agent_role,
            task=subtasks[i],
            model=inp.agent_model,
            max_turns=inp.agent_max_turns,
            user=inp.user,
            retry=inp.retry,
        )
        child: Any = ctx.call_child_workflow(
            names.AGENT_LOOP, input=agent, instance_id=f"{ctx.instance_id}.agent-{i + 1}"
        )
        pending[child] = i

    while next_i < n and len(pending) < inp.max_parallel:
        start(next_i)
        next_i += 1
    _status(ctx, Progress(phase="agents", agents_total=n, usage=usage))
    while pending:
        finished = yield when_any(list(pending))
        i = pending.pop(finished)
        try:
            out = AgentOutput.model_validate(finished.get_result())
        except TaskFailedError as err:
            out = AgentOutput(
                agent=f"agent-{i + 1}",
                status="failed",
                content="",
                turns=0,
                usage=Usage(),
                error=err.details.message,
            )
        results[i] = out
        usage = usage.add(out.usage)
        done += 1
        if next_i < n:
            start(next_i)
            next_i += 1
        _status(ctx, Progress(phase="agents", agents_done=done, agents_total=n, usage=usage))

    outputs = [r for r in results if r is not None]
    answered = [r for r in outputs if r.status != "failed"]
    _status(ctx, Progress(phase="reducing", agents_done=done, agents_total=n, usage=usage))
    merged = "\n\n".join(f"## {r.agent}\n{r.content}" for r in answered)
    reduce_req = LLMRequest(
        run_id=inp.run_id,
        agent="reducer",
        model=inp.reducer_model,
        user=inp.user,
        messages=[
            {"role": "system", "content": REDUCER_PROMPT.format(n=len(answered))},
            {"role": "user", "content": f"Task: {inp.task}\n\nAnswers:\n{merged}"},
        ],
    )
    final = LLMResult.model_validate(
        (yield from call_activity(ctx, names.CALL_LLM, reduce_req, inp.retry, key="reducer"))
    )
    usage = usage.add(final.usage)
    _status(ctx, Progress(phase="done", agents_done=done, agents_total=n, usage=usage))
    return RunOutput(
        swarm="scatter_gather",
        answer=final.content or "",
        agent_results=outputs,
        usage=usage,
        failed_agents=len(outputs) - len(answered),
    ).model_dump()
