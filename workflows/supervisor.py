"""``swarmd.supervisor``: a supervisor LLM picks the next worker each round.

Each round the supervisor (the spec's coordinator) sees the workers' names and
the work so far, and answers with the next worker's name or ``DONE``. The
chosen worker runs as an agent loop (child workflow) on the task plus the work
so far. The run ends when the supervisor says DONE, at ``limits.max_rounds``,
or at a limit; the supervisor then writes the final answer.

Deterministic: no clocks, randomness, I/O or logging here.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext

from swarmd.engine.models import AgentOutput, SwarmInput
from swarmd.engine.spec import AgentSpec
from swarmd.workflows.steps import Run

PICK_PROMPT = (
    "{role}\n\nYou supervise a team. Workers: {workers}. Rounds so far: {rounds}.\n"
    "Reply with only the name of the next worker, or DONE if the task is complete."
)
FINAL_PROMPT = "{role}\n\nWrite the final answer to the task from your team's work."
DEFAULT_SUPERVISOR = AgentSpec(name="supervisor", role="You lead a team.", model="swarmd-smart")


def pick(answer: str, workers: list[str]) -> str | None:
    """The worker the supervisor named, or None for DONE / no valid name."""
    words = [w.strip(" .,:;!\"'`*").lower() for w in answer.split()]
    if not words or words[0] == "done":
        return None
    for w in words:
        if w in workers:
            return w
    return None


def transcript(work: list[AgentOutput]) -> str:
    return "\n\n".join(f"## round {i + 1}: {w.agent}\n{w.content}" for i, w in enumerate(work))


def supervisor(
    ctx: DaprWorkflowContext, raw: dict[str, Any], engine: int = 1
) -> Generator[Any, Any, dict[str, Any]]:
    inp = SwarmInput.model_validate(raw)
    run = Run(ctx, inp, engine)
    boss = inp.spec.coordinator or DEFAULT_SUPERVISOR  # specs require one; old inputs may not
    workers = {a.name: a for a in inp.spec.agents}
    work: list[AgentOutput] = []
    stop: str | None = None
    for rnd in range(inp.spec.limits.max_rounds):
        run.status(phase="supervising", round=rnd + 1, agents_done=len(work))
        choice = yield from run.llm(
            boss,
            [
                {
                    "role": "system",
                    "content": PICK_PROMPT.format(
                        role=boss.role, workers=", ".join(workers), rounds=rnd
                    ),
                },
                {
                    "role": "user",
                    "content": f"Task: {inp.task}\n\nWork so far:\n{transcript(work)}",
                },
            ],
            key=f"pick-{rnd + 1}",
            inline=True,  # parsed below
        )
        name = pick(choice.content or "", list(workers))
        if name is None or (stop := run.stop_reason()) is not None:
            break
        out = yield from run.one_agent(
            workers[name],
            f"{inp.task}\n\nWork so far:\n{transcript(work)}",
            key=f"round-{rnd + 1}-{name}",
            label=name,
        )
        work.append(out)
        if (stop := run.stop_reason()) is not None:
            break
    if stop is not None:
        return (
            yield from run.finish(
                work[-1].content if work else "", work, rounds=len(work), stop_reason=stop
            )
        )
    run.status(phase="finalizing", agents_done=len(work))
    final = yield from run.llm(
        boss,
        [
            {"role": "system", "content": FINAL_PROMPT.format(role=boss.role)},
            {"role": "user", "content": f"Task: {inp.task}\n\nWork:\n{transcript(work)}"},
        ],
        key="final",
    )
    return (yield from run.finish(final.content or "", work, rounds=len(work)))
