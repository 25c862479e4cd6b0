"""``swarmd.scatter_gather``: planner, N agents in parallel, reducer.

1. A planner LLM call (the spec's coordinator) splits the task into exactly N
   subtasks.
2. N agent loops (child workflows, the spec's first agent as template) run with
   at most ``limits.max_parallel`` in flight; progress (agents done / total) is
   published as the custom status.
3. A reducer LLM call merges the agents' answers into one.

Deterministic: no clocks, randomness, I/O or logging here.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext

from swarmd.activities.reduce import ReduceProgress, ReduceRequest
from swarmd.engine import names
from swarmd.engine.models import AgentOutput, SwarmInput
from swarmd.engine.retry import call_activity
from swarmd.engine.spec import AgentSpec
from swarmd.workflows.steps import Run

PLANNER_PROMPT = (
    "You are the planner of a team of {n} agents. Split the task below into exactly {n} "
    "subtasks that can be worked on independently. Answer with one subtask per line, "
    "numbered 1 to {n}, and nothing else."
)
REDUCER_PROMPT = (
    "You are the reducer. Merge the answers of {n} agents to the task below into one "
    "coherent final answer."
)
DEFAULT_PLANNER = AgentSpec(name="planner", role="You plan.", model="swarmd-smart")
DEFAULT_REDUCER = AgentSpec(name="reducer", role="You merge answers.", model="swarmd-smart")
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


def chunk(sections: list[str], limit: int, sizes: list[int] | None = None) -> list[str]:
    """Group sections, in order, into chunks of at most ``limit`` characters
    (a single longer section is a chunk of its own). ``sizes`` are the sections'
    real lengths when some hold references to answers kept in the state store."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for i, s in enumerate(sections):
        n = sizes[i] if sizes is not None else len(s)
        if current and size + n > limit:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(s)
        size += n + 2
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def scatter_gather(
    ctx: DaprWorkflowContext, raw: dict[str, Any], engine: int = 1, **activities: str
) -> Generator[Any, Any, dict[str, Any]]:
    """``activities``: other names for the LLM and agent-group activities (only the
    engine-ceiling benchmark passes them, to run this shape with no-op steps)."""
    inp = SwarmInput.model_validate(raw)
    run = Run(ctx, inp, engine, **activities)
    template = inp.spec.agents[0]
    n = inp.agents or len(inp.spec.agents)
    run.budget_agents(n)
    planner = inp.spec.coordinator or DEFAULT_PLANNER
    reducer = inp.spec.reducer or DEFAULT_REDUCER
    run.status(phase="planning", agents_total=n)

    system = PLANNER_PROMPT.format(n=n)
    if inp.spec.coordinator is not None:
        system = f"{planner.role}\n\n{system}"
    plan = yield from run.llm(
        planner,
        [{"role": "system", "content": system}, {"role": "user", "content": inp.task}],
        key="planner",
        inline=True,  # split below: a 10,000-line plan passed the reference threshold
    )
    subtasks = parse_subtasks(plan.content or "", n, inp.task)
    if (stop := run.stop_reason()) is not None:
        return (yield from run.finish("", [], stop_reason=stop))

    # with several agents in the spec, subtasks go to them round-robin
    agents = inp.spec.agents if inp.agents is None else [template]
    jobs = [
        (agents[i % len(agents)], subtasks[i], f"agent-{i + 1}", f"agent-{i + 1}") for i in range(n)
    ]
    run.status(phase="agents", agents_total=n)
    results, stop = yield from run.bounded(jobs, on_done=lambda done: run.status(agents_done=done))
    outputs: list[AgentOutput] = [r for r in results if r is not None]
    if stop is not None:
        return (yield from run.finish("", outputs, stop_reason=stop))

    answered = [r for r in outputs if r.usable]
    run.status(phase="reducing")
    sections = [f"## {r.agent}\n{r.content}" for r in answered]
    merged = "\n\n".join(sections)
    limit = inp.spec.limits.reduce_chunk_chars
    sizes: list[int] | None = None
    total = len(merged)
    # Patch: measure answers by their real size, references included. Runs that were
    # already past this point on the old code replay the old decision (is_patched is
    # False while replaying their history), so their step sequence never changes.
    # Engine v2 was born with it, so it asks no patch (a patch recorded in a step that
    # follows a resume is later seen as a mismatch by daprd 1.18.2, which stalls the run).
    if engine >= 2 or ctx.is_patched("chunk-by-real-size"):
        sizes = [len(f"## {r.agent}\n") + r.size for r in answered]
        total = sum(sizes) + 2 * max(0, len(sizes) - 1)
    if total > limit:
        # too long for one prompt: summarise in chunks (one checkpointed activity)
        chunks = chunk(sections, limit, sizes)
        req = ReduceRequest(
            run_id=inp.run_id,
            step="reduce-chunks",
            task=inp.task,
            model=reducer.model,
            chunks=chunks,
            user=inp.user,
        )
        raw_progress = yield from call_activity(
            ctx, names.REDUCE_CHUNKS, req, inp.retry, key="reduce-chunks"
        )
        progress = ReduceProgress.model_validate(raw_progress)
        run.usage = run.usage.add(progress.usage)
        merged = "\n\n".join(f"## part {i + 1}\n{p}" for i, p in enumerate(progress.partials))
    system = REDUCER_PROMPT.format(n=len(answered))
    if inp.spec.reducer is not None:
        system = f"{reducer.role}\n\n{system}"
    final = yield from run.llm(
        reducer,
        [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Task: {inp.task}\n\nAnswers:\n{merged}"},
        ],
        key="reducer",
    )
    return (yield from run.finish(final.content or "", outputs))
