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


def make_call_llm(client: AsyncOpenAI) -> CallLLM:
    """Build the activity around a client created by the entrypoint."""

    async def call_llm(ctx: WorkflowActivityContext, req: LLMRequest) -> dict[str, Any]:
        req = LLMRequest.model_validate(req)
        kwargs: dict[str, Any] = {"model": req.model, "messages": req.messages}
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
        return LLMResult(
            content=msg.content, tool_calls=calls, model=resp.model or req.model, usage=usage
        ).model_dump()

    return call_llm
