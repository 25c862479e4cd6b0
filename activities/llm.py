"""The ``swarmd.call_llm`` activity: one chat completion through the LiteLLM proxy.

The ``openai`` client is built in the entrypoint with ``max_retries=0`` and
handed in; this module only classifies failures so the workflow's retry policy
(which owns retries, with jitter) knows what to retry.

Every call records its usage (tokens, and cost when the gateway reports it in
``x-litellm-response-cost``), its metrics by model alias (calls, errors, the
gateway's retries and fallbacks from ``x-litellm-attempted-retries`` /
``x-litellm-attempted-fallbacks``, tokens, latency) and a ``chat <alias>``
span with the GenAI semantic-convention attributes, parented to its agent's
span (see :mod:`swarmd.telemetry`). The end user (``LLMRequest.user``) goes to
the gateway as the OpenAI ``user`` field (LiteLLM's end-user id, used for its
per-user budgets and limits) and in the request metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import httpx
import openai
from dapr.ext.workflow import WorkflowActivityContext
from openai import AsyncOpenAI
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from swarmd import telemetry
from swarmd.engine.journal import Journal
from swarmd.engine.models import LLMRequest, LLMResult, ToolCall, ToolRequest, Usage
from swarmd.engine.payloads import PayloadStore
from swarmd.errors import (
    GatewayUnreachable,
    GuardrailBlocked,
    NonRetryableActivityError,
    RetryableActivityError,
)
from swarmd.metrics import Metrics
from swarmd.telemetry import global_tracer

CallLLM = Callable[[WorkflowActivityContext, LLMRequest], Awaitable[dict[str, Any]]]

log = logging.getLogger("swarmd.activities.llm")

#: metrics of calls made without an observer (kept apart from any served registry)
_UNREGISTERED = Metrics()

#: HTTP statuses worth retrying: timeouts, conflicts, rate limits, server errors.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

#: how long ``swarmd.call_llm`` keeps waiting for a gateway it cannot reach at all (as
#: the group activities do, ``activities.agents``): a LiteLLM restart took 40-110 s on
#: a loaded machine in the chaos runs, the run's retry policy alone gives up after ~31 s
UNREACHABLE_PATIENCE_S = 600.0
#: the longest wait between two tries of an unreachable gateway
UNREACHABLE_RETRY_MAX_S = 5.0

T = TypeVar("T")


async def past_gateway_outages(
    make: Callable[[], Awaitable[T]], patience_s: float = UNREACHABLE_PATIENCE_S
) -> T:
    """``make()``, tried again for up to ``patience_s`` while it fails with
    :class:`GatewayUnreachable` (no connection: the call was never made, so trying
    again pays for nothing). Waits grow to :data:`UNREACHABLE_RETRY_MAX_S`, jittered
    so that the calls of a whole process do not hit a gateway that is back at once.
    Every other error goes to the caller at once (the run's retry policy owns them)."""
    since = time.monotonic()
    n = 0
    while True:
        try:
            return await make()
        except GatewayUnreachable:
            if time.monotonic() - since >= patience_s:
                raise
            n += 1
            cap = min(UNREACHABLE_RETRY_MAX_S, 0.25 * 2**n)
            await asyncio.sleep(cap * random.uniform(0.5, 1.0))


def guardrail_of(exc: Exception) -> tuple[str, str] | None:
    """(guardrail name, reason) when the gateway refused the call by a guardrail.

    LiteLLM answers a block with a 400 whose error carries
    ``provider_specific_fields.guardrail_name`` (set by the proxy for every guardrail,
    shipped or ours) and the guardrail's own ``error`` text."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code != 400:
        return None
    body = exc.body if isinstance(exc.body, dict) else {}
    fields = body.get("provider_specific_fields")
    if not isinstance(fields, dict) or not fields.get("guardrail_name"):
        return None
    reason = fields.get("error") or body.get("message") or exc.message
    return str(fields["guardrail_name"]), str(reason)


def _never_sent(exc: BaseException) -> bool:
    """Did the call fail while connecting (so the gateway never got it)? openai's
    aiohttp client (httpx_aiohttp) reports a refused connection as ``ConnectTimeout``,
    which the ``openai`` client turns into :class:`openai.APITimeoutError`; the cause
    chain still holds aiohttp's connector error. (A server that disconnected mid-call
    is mapped the same way but got the call: that stays a failed call.)"""
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain: openai -> httpx -> aiohttp -> OSError
        if seen is None:
            return False
        if isinstance(
            seen,
            (httpx.ConnectError, aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError),
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def classify(exc: Exception) -> Exception:
    """Map an ``openai`` exception to our retryable / non-retryable errors."""
    if (blocked := guardrail_of(exc)) is not None:
        name, reason = blocked
        return GuardrailBlocked(f"{name}: {reason}", guardrail=name)
    if isinstance(exc, openai.APITimeoutError) and not _never_sent(exc):
        return RetryableActivityError(f"gateway timed out: {exc}")
    if isinstance(exc, openai.APIConnectionError):
        return GatewayUnreachable(f"gateway unreachable: {exc}")
    if isinstance(exc, openai.APIStatusError):
        msg = f"gateway answered {exc.status_code}: {exc.message}"
        if exc.status_code in RETRYABLE_STATUSES or exc.status_code >= 500:
            return RetryableActivityError(msg, status=exc.status_code)
        return NonRetryableActivityError(msg, status=exc.status_code)
    return NonRetryableActivityError(f"{type(exc).__name__}: {exc}")


def error_reason(exc: Exception) -> str:
    """A low-cardinality label for a failed call."""
    if guardrail_of(exc) is not None:
        return "guardrail"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        return str(exc.status_code)
    return "invalid"


def header_number(headers: Mapping[str, str], name: str) -> float:
    """A numeric ``x-litellm-*`` header, 0 when absent, empty or not a number."""
    try:
        return float(headers.get(name) or 0)
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class LLMObserver:
    """Where a call's metrics and span go (built by the entrypoint), and what the
    gateway is told of it for its own records."""

    metrics: Metrics = field(default_factory=Metrics)
    tracer: Callable[[], Tracer] = field(default=lambda: global_tracer())
    #: send the call's run, agent and user as LiteLLM request ``metadata`` (its spend
    #: logs); off by default: the proxy spends ~3 ms more CPU on each call carrying it
    spend_metadata: bool = False


async def complete(
    client: AsyncOpenAI,
    req: LLMRequest,
    payloads: PayloadStore | None = None,
    obs: LLMObserver | None = None,
    workflow_id: str = "",
    guardrails: Sequence[str] = (),
) -> LLMResult:
    """One chat completion through the gateway, errors classified for the engine.

    With ``payloads``, reference markers in the prompt are resolved before the
    call and an answer above the threshold comes back as a marker (see
    ``swarmd.engine.payloads``), so big texts never travel through history.
    With ``obs``, the call's metrics and span are recorded (``workflow_id`` is the
    calling workflow's instance id: it picks the parent span). ``guardrails`` are
    gateway guardrails to run on this call besides the default-on ones (the
    user-input injection guard, ``SWARMD_USER_INPUT_GUARDRAILS``); a call a
    guardrail refuses raises :class:`GuardrailBlocked`, never retried.
    """
    o = obs if obs is not None else LLMObserver(metrics=_UNREGISTERED)
    m = o.metrics
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
    extra: dict[str, Any] = {}
    if o.spend_metadata:
        metadata = {"swarmd_run_id": req.run_id, "swarmd_agent": req.agent}
        if req.user:
            metadata["swarmd_user"] = req.user
        extra["metadata"] = metadata
    if guardrails:
        extra["guardrails"] = list(guardrails)
    parent = telemetry.step_parent(req.trace, req.run_id, workflow_id)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "litellm",
        "gen_ai.request.model": req.model,
        "swarmd.run_id": req.run_id,
        "swarmd.agent": req.agent,
        "swarmd.workflow_id": workflow_id,
    }
    if req.max_tokens:
        attrs["gen_ai.request.max_tokens"] = req.max_tokens
    if req.user:
        attrs["enduser.id"] = req.user
    with (
        telemetry.run_scope(req.run_id),
        o.tracer().start_as_current_span(
            f"chat {req.model}",
            context=telemetry.context_of(parent),
            kind=SpanKind.CLIENT,
            attributes=attrs,
            links=telemetry.links_to_current(),
            record_exception=False,
            set_status_on_exception=False,
        ) as span,
    ):
        started = time.perf_counter()
        try:
            raw = await client.chat.completions.with_raw_response.create(
                **kwargs, extra_body=extra or None
            )
            resp = raw.parse()
        except openai.OpenAIError as exc:
            reason = error_reason(exc)
            m.llm_errors.labels(req.model, reason).inc()
            m.agent_step_seconds.labels("llm", req.model).observe(time.perf_counter() - started)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.set_attribute("error.type", reason)
            if (blocked := guardrail_of(exc)) is not None:
                m.guardrail_blocks.labels(blocked[0]).inc()
            log.warning(
                "LLM call failed: %s",
                reason,
                extra={"agent": req.agent, "model": req.model, "reason": reason},
            )
            raise classify(exc) from exc
        m.agent_step_seconds.labels("llm", req.model).observe(time.perf_counter() - started)
        headers = raw.headers
        retries = int(header_number(headers, "x-litellm-attempted-retries"))
        fallbacks = int(header_number(headers, "x-litellm-attempted-fallbacks"))
        cost = header_number(headers, "x-litellm-response-cost")
        m.llm_retries.labels(req.model).inc(retries)
        m.llm_fallbacks.labels(req.model).inc(fallbacks)
        if not resp.choices:
            m.llm_errors.labels(req.model, "no_choices").inc()
            span.set_status(Status(StatusCode.ERROR, "no choices"))
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
            cost_usd=cost,
        )
        m.llm_calls.labels(req.model).inc()
        m.llm_tokens.labels(req.model, "input").inc(usage.prompt_tokens)
        m.llm_tokens.labels(req.model, "output").inc(usage.completion_tokens)
        m.llm_cost.labels(req.model).inc(cost)
        span.set_attributes(
            {
                "gen_ai.response.model": resp.model or req.model,
                "gen_ai.response.id": resp.id or "",
                "gen_ai.response.finish_reasons": [c.finish_reason or "" for c in resp.choices],
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "swarmd.llm.cost_usd": cost,
                "swarmd.llm.deployment": headers.get("x-litellm-model-id") or "",
                "swarmd.llm.retries": retries,
                "swarmd.llm.fallbacks": fallbacks,
            }
        )
    content = msg.content
    chars = len(content) if content is not None else None
    if payloads is not None and not req.inline:
        content = await payloads.offload(req.run_id, content, req.offload_above)
    return LLMResult(
        content=content,
        tool_calls=calls,
        model=resp.model or req.model,
        usage=usage,
        content_chars=chars,
    )


def make_call_llm(
    client: AsyncOpenAI,
    payloads: PayloadStore | None = None,
    obs: LLMObserver | None = None,
    journal: Journal | None = None,
    guardrails: Sequence[str] = (),
) -> CallLLM:
    """Build the ``swarmd.call_llm`` activity around clients made by the entrypoint.

    A request with a ``call_key`` (engine v2) is answered from the call journal when
    it was answered before (see :mod:`swarmd.engine.journal`). A gateway that cannot be
    reached is waited out (:func:`past_gateway_outages`) instead of failing the call
    after the run's few retries: planner, reducer, supervisor and user-agent turns
    make their calls here, and a LiteLLM restart failed them in the chaos runs."""

    async def call_llm(ctx: WorkflowActivityContext, req: LLMRequest) -> dict[str, Any]:
        r = LLMRequest.model_validate(req)

        async def once() -> dict[str, Any]:
            return (
                await complete(client, r, payloads, obs, ctx.workflow_id, guardrails)
            ).model_dump()

        async def make() -> dict[str, Any]:
            return await past_gateway_outages(once)

        if journal is None or r.call_key is None:
            return await make()
        fp = {"model": r.model, "messages": r.messages, "tools": r.tools}
        return await journal.once(r.run_id, r.call_key, fp, make)

    return call_llm


@contextlib.contextmanager
def tool_step(
    obs: LLMObserver | None,
    *,
    run_id: str,
    agent: str,
    name: str,
    workflow_id: str,
    carrier: str | None,
) -> Iterator[Span]:
    """The span (``swarmd.tool <name>``, child of its agent's span) and step-latency
    metric of one tool call; the body is the call."""
    o = obs if obs is not None else LLMObserver(metrics=_UNREGISTERED)
    parent = telemetry.step_parent(carrier, run_id, workflow_id)
    with (
        telemetry.run_scope(run_id or None),
        o.tracer().start_as_current_span(
            f"swarmd.tool {name}",
            context=telemetry.context_of(parent),
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "swarmd.run_id": run_id,
                "swarmd.agent": agent,
                "swarmd.workflow_id": workflow_id,
            },
            links=telemetry.links_to_current(),
        ) as span,
    ):
        started = time.perf_counter()
        try:
            yield span
        finally:
            o.metrics.agent_step_seconds.labels("tool", name or "unknown").observe(
                time.perf_counter() - started
            )


def traced_tool(
    inner: Callable[[WorkflowActivityContext, ToolRequest], Awaitable[dict[str, Any]]],
    obs: LLMObserver | None = None,
) -> Callable[[WorkflowActivityContext, ToolRequest | dict[str, Any]], Awaitable[dict[str, Any]]]:
    """Wrap the tool activity with its span (under the request's ``trace``) and
    step-latency metric."""

    async def call_tool(
        ctx: WorkflowActivityContext, raw: ToolRequest | dict[str, Any]
    ) -> dict[str, Any]:
        req = ToolRequest.model_validate(raw)
        with tool_step(
            obs,
            run_id=req.run_id,
            agent=req.agent,
            name=req.name,
            workflow_id=ctx.workflow_id,
            carrier=req.trace,
        ) as span:
            out = await inner(ctx, req)
            if isinstance(out, dict) and "error" in out:
                span.set_attribute("error.type", "tool_error")
            return out

    return call_tool
