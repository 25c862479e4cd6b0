"""The ``swarmd.reduce_chunks`` activity: summarise many agent answers chunk by chunk.

When a scatter-gather's answers are too long for one reducer prompt, the
workflow cuts them into chunks and this one activity summarises the chunks
with concurrent LLM sub-calls, one per chunk. Each sub-call is journaled
(:mod:`swarmd.engine.journal`, key ``reducer-part-<i>/<step>/1/0``) as it
completes, so a retry after a crash pays only for the chunks whose summary was
not journaled yet: a crash with two of three summaries done costs one more
call, not three.

Concurrent, not one after another: with a 1 s model the three chunks of a
1,000-agent run took three model latencies in a row; now one. At most
``max_in_flight`` (``SWARMD_LLM_MAX_IN_FLIGHT``) of one activity's sub-calls are
on the wire at once.

Runs that were mid-reduce on the code before the journal saved a checkpoint
(``checkpoint|<run>|<step>``, the summaries done in order) after every
sub-call; those summaries are taken from it and not asked again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from dapr.ext.workflow import WorkflowActivityContext
from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, Field

from swarmd.activities.llm import LLMObserver, complete, past_gateway_outages
from swarmd.engine.checkpoint import Checkpoint
from swarmd.engine.dapr import DaprClient
from swarmd.engine.journal import Journal, call_key
from swarmd.engine.models import LLMRequest, LLMResult, Usage
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
    journal: Journal,
    max_in_flight: int,
    payloads: PayloadStore | None = None,
    obs: LLMObserver | None = None,
) -> Callable[[WorkflowActivityContext, ReduceRequest], Awaitable[dict[str, Any]]]:
    async def reduce_chunks(ctx: WorkflowActivityContext, req: ReduceRequest) -> dict[str, Any]:
        req = ReduceRequest.model_validate(req)
        saved = await Checkpoint(state, req.run_id, req.step, ReduceProgress).load()
        done = saved or ReduceProgress()
        n = len(req.chunks)
        todo = range(len(done.partials), n)
        keys = {i: call_key(f"reducer-part-{i + 1}", req.step) for i in todo}
        await journal.index(req.run_id, list(keys.values()))
        gate = asyncio.Semaphore(max_in_flight)

        async def summarise(i: int) -> LLMResult:
            r = LLMRequest(
                run_id=req.run_id,
                agent=f"reducer-part-{i + 1}",
                model=req.model,
                user=req.user,
                call_key=keys[i],
                messages=[
                    {"role": "system", "content": CHUNK_PROMPT.format(i=i + 1, n=n)},
                    {"role": "user", "content": f"Task: {req.task}\n\nAnswers:\n{req.chunks[i]}"},
                ],
            )

            async def once() -> dict[str, Any]:
                async with gate:
                    res = await complete(client, r, payloads, obs, ctx.workflow_id)
                return res.model_dump()

            async def make() -> dict[str, Any]:
                return await past_gateway_outages(once)

            fp = {"model": r.model, "messages": r.messages, "tools": r.tools}
            raw = await journal.once(req.run_id, keys[i], fp, make, indexed=True)
            return LLMResult.model_validate(raw)

        # every sub-call runs to its end (and is journaled) before a failure fails the
        # activity, so the retry does not pay again for the ones that had succeeded
        results = await asyncio.gather(*(summarise(i) for i in todo), return_exceptions=True)
        usage = done.usage
        partials = list(done.partials)
        for res in results:
            if isinstance(res, BaseException):
                raise res
            usage = usage.add(res.usage)
            partials.append(res.content or "")
        return ReduceProgress(partials=partials, usage=usage).model_dump()

    return reduce_chunks
