"""``swarmd.pipeline``: agents in sequence, each consuming the previous output.

Stage k's agent loop gets the task and stage k-1's answer; the last stage's
answer is the run's answer.

Deterministic: no clocks, randomness, I/O or logging here.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext

from swarmd.engine.models import AgentOutput, SwarmInput
from swarmd.workflows.steps import Run


def pipeline(
    ctx: DaprWorkflowContext, raw: dict[str, Any], engine: int = 1
) -> Generator[Any, Any, dict[str, Any]]:
    inp = SwarmInput.model_validate(raw)
    run = Run(ctx, inp, engine)
    stages = inp.spec.agents
    outputs: list[AgentOutput] = []
    previous = ""
    for i, agent in enumerate(stages):
        run.status(phase=f"stage:{agent.name}", agents_done=i, agents_total=len(stages))
        task = (
            inp.task
            if i == 0
            else (
                f"Task: {inp.task}\n\n"
                f"Output of the previous stage ({stages[i - 1].name}):\n{previous}"
            )
        )
        out = yield from run.one_agent(agent, task, key=f"stage-{i + 1}-{agent.name}")
        outputs.append(out)
        if out.status == "failed":
            return (yield from run.finish(previous, outputs, stop_reason="stage_failed"))
        previous = out.content
        if (stop := run.stop_reason()) is not None:
            return (yield from run.finish(previous, outputs, stop_reason=stop))
    run.status(agents_done=len(stages))
    return (yield from run.finish(previous, outputs))
