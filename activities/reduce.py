"""The ``swarmd.reduce_chunks`` activity: summarise many agent answers chunk by chunk.

When a scatter-gather's answers are too long for one reducer prompt, the
workflow cuts them into chunks and this one activity summarises each chunk
with an LLM sub-call, saving a mid-step checkpoint after every sub-call. A
retry after a crash resumes at the first chunk not yet summarised, so a crash
after the second of three sub-calls costs one more call, not three.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from dapr.ext.workflow import WorkflowActivityContext
from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, Field

from swarmd.activities.llm import LLMObserver, complete
from swarmd.engine.checkpoint import Checkpoint
from swarmd.engine.dapr import DaprClient
from swarmd.engine.models import LLMRequest, Usage
from swarmd.engine.payloads import PayloadStore

CHUNK_PROMPT = (
    "You are a reducer working on part {i} of {n}. Summarise the agents' answers below "
    "for the task, keeping every distinct finding."
)


class ReduceRequest(BaseModel):
    """Input of ``swarmd.reduce_chunks``."""

    model_config = ConfigDict(extra="forbid")
    run_id: str
    step: str = Field(description="deterministic step key, from the workflow")
    task: str
    model: str
    chunks: list[str] = Field(min_length=1)
    user: str | None = None


class ReduceProgress(BaseModel):
    """The checkpoint: summaries of the chunks done so far."""

    partials: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)


def make_reduce_chunks(
    client: AsyncOpenAI,
    state: DaprClient,
    payloads: PayloadStore | None = None,
    obs: LLMObserver | None = None,
) -> Callable[[WorkflowActivityContext, ReduceRequest], Awaitable[dict[str, Any]]]:
    async def reduce_chunks(ctx: WorkflowActivityContext, req: ReduceRequest) -> dict[str, Any]:
        req = ReduceRequest.model_validate(req)
        cp = Checkpoint(state, req.run_id, req.step, ReduceProgress)
        progress = await cp.load() or ReduceProgress()
        n = len(req.chunks)
        for i in range(len(progress.partials), n):
            res = await complete(
                client,
                LLMRequest(
                    run_id=req.run_id,
                    agent=f"reducer-part-{i + 1}",
                    model=req.model,
                    user=req.user,
                    messages=[
                        {"role": "system", "content": CHUNK_PROMPT.format(i=i + 1, n=n)},
                        {
                            "role": "user",
                            "content": f"Task: {req.task}\n\nAnswers:\n{req.chunks[i]}",
                        },
                    ],
                ),
                payloads,
                obs,
                ctx.workflow_id,
            )
            progress = ReduceProgress(
                partials=[*progress.partials, res.content or ""],
                usage=progress.usage.add(res.usage),
            )
            await cp.save(progress)
        return progress.model_dump()

    return reduce_chunks
