"""The ``swarmd.call_llm`` activity: one chat completion through the LiteLLM proxy.

The ``openai`` client is built in the entrypoint with ``max_retries=0`` and
handed in; this module only classifies failures so the workflow's retry policy
(which owns retries, with jitter) knows what to retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import openai
from dapr.ext.workflow import WorkflowActivityContext
from openai import AsyncOpenAI

from swarmd.engine.models import LLMRequest, LLMResult, ToolCall, Usage
from swarmd.engine.payloads import PayloadStore
from swarmd.errors import NonRetryableActivityError, RetryableActivityError

CallLLM = Callable[[WorkflowActivityContext, LLMRequest], Awaitable[dict[str, Any]]]

#: HTTP statuses worth retrying: timeouts, conflicts, rate limits, server errors.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def classify(exc: Exception) -> Exception:
    """Map an ``openai`` exception to our retryable / non-retryable errors."""
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return RetryableActivityError(f"gateway unreachable: {exc}")
    if isinstance(exc, openai.APIStatusError):
        msg = f"gateway answered {exc.status_code}: {exc.message}"
        if exc.status_code in RETRYABLE_STATUSES or exc.status_code >= 500:
            return RetryableActivityError(msg, status=exc.status_code)
        return NonRetryableActivityError(msg, status=exc.status_code)
    return NonRetryableActivityError(f"{type(exc).__name__}: {exc}")


async def complete(
    client: AsyncOpenAI, req: LLMRequest, payloads: PayloadStore | None = None
) -> LLMResult:
    """One chat completion through the gateway, errors classified for the engine.

    With ``payloads``, reference markers in the prompt are resolved before the
    call and an answer above the threshold comes back as a marker (see
    ``swarmd.engine.payloads``), so big texts never travel through history.
    """
    messages = req.messages
    if payloads is not None:
        messages = await payloads.resolve_messages(messages)
    kwargs: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.tools:
        kwargs["tools"] = req.tools
    if req.max_tokens:
        kwargs["max_tokens"] = req.max_tokens
    if req.user:
        kwargs["user"] = req.user
    metadata = {"swarmd_run_id": req.run_id, "swarmd_agent": req.agent}
    try:
        resp = await client.chat.completions.create(**kwargs, extra_body={"metadata": metadata})
    except openai.OpenAIError as exc:
        raise classify(exc) from exc
    if not resp.choices:
        raise RetryableActivityError("gateway returned no choices")
    msg = resp.choices[0].message
    calls = [
        ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
        for c in (msg.tool_calls or [])
        if c.type == "function"
    ]
    usage = Usage(
        prompt_tokens=resp.usage.prompt_tokens if resp.usage else 0,
        completion_tokens=resp.usage.completion_tokens if resp.usage else 0,
        calls=1,
    )
    content = msg.content
    if payloads is not None:
        content = await payloads.offload(req.run_id, content)
    return LLMResult(content=content, tool_calls=calls, model=resp.model or req.model, usage=usage)


def make_call_llm(client: AsyncOpenAI, payloads: PayloadStore | None = None) -> CallLLM:
    """Build the ``swarmd.call_llm`` activity around clients made by the entrypoint."""

    async def call_llm(ctx: WorkflowActivityContext, req: LLMRequest) -> dict[str, Any]:
        result = await complete(client, LLMRequest.model_validate(req), payloads)
        return result.model_dump()

    return call_llm
