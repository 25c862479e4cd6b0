"""``swarmd.debate``: N agents answer, critique each other for R rounds, then decide.

Round 0: every agent answers the task (in parallel). Rounds 1..R
(``limits.max_rounds``): every agent sees the others' latest answers, critiques
them and revises its own. Then a judge (the spec's coordinator) picks the best
final answer, or, with ``decision: vote``, the answer most agents converged on
wins (ties go to the earliest agent).

Deterministic: no clocks, randomness, I/O or logging here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext

from swarmd.engine.models import AgentOutput, SwarmInput
from swarmd.workflows.steps import Run

CRITIQUE = (
    "Task: {task}\n\nYour previous answer:\n{own}\n\nThe other agents answered:\n{others}\n\n"
    "Critique their answers, then give your revised answer."
)
JUDGE = "{role}\n\nYou judge a debate. Pick or compose the best final answer to the task."


def vote(outputs: list[AgentOutput]) -> str:
    counts = Counter(o.content for o in outputs if o.usable)
    if not counts:
        return ""
    best = max(counts.values())
    return next(o.content for o in outputs if counts.get(o.content) == best)


def debate(
    ctx: DaprWorkflowContext, raw: dict[str, Any], engine: int = 1
) -> Generator[Any, Any, dict[str, Any]]:
    inp = SwarmInput.model_validate(raw)
    run = Run(ctx, inp, engine)
    agents = inp.spec.agents
    rounds = inp.spec.limits.max_rounds
    history: list[AgentOutput] = []

    run.status(phase="answering", round=0, agents_total=len(agents))
    jobs = [(a, inp.task, f"r0-{a.name}", a.name) for a in agents]
    results, stop = yield from run.bounded(jobs)
    latest = [r for r in results if r is not None]
    history += latest
    done_rounds = 0
    for rnd in range(1, rounds + 1):
        if stop is not None:
            break
        run.status(phase="debating", round=rnd)
        jobs = []
        for i, a in enumerate(agents):
            others = "\n\n".join(
                f"## {o.agent}\n{o.content}" for j, o in enumerate(latest) if j != i
            )
            jobs.append(
                (
                    a,
                    CRITIQUE.format(task=inp.task, own=latest[i].content, others=others),
                    f"r{rnd}-{a.name}",
                    a.name,
                )
            )
        results, stop = yield from run.bounded(jobs)
        if stop is None:
            latest = [r for r in results if r is not None]
            history += latest
            done_rounds = rnd
    if stop is not None:
        return (yield from run.finish(vote(latest), history, rounds=done_rounds, stop_reason=stop))

    judge = inp.spec.coordinator
    if inp.spec.decision == "vote" or judge is None:
        return (yield from run.finish(vote(latest), history, rounds=done_rounds))
    run.status(phase="judging")
    answers = "\n\n".join(f"## {o.agent}\n{o.content}" for o in latest)
    verdict = yield from run.llm(
        judge,
        [
            {"role": "system", "content": JUDGE.format(role=judge.role)},
            {"role": "user", "content": f"Task: {inp.task}\n\nFinal answers:\n{answers}"},
        ],
        key="judge",
    )
    return (yield from run.finish(verdict.content or "", history, rounds=done_rounds))
