"""Tracing for swarmd: OpenTelemetry set up by the entrypoint, one trace per run.

Nothing here runs at import: :func:`setup_tracing` is called by ``swarmd serve``
(and tests build their own provider with :func:`tracer_provider`).

Trace shape (one trace per run)::

    POST /v1/runs                     SERVER, the HTTP request (root, or the caller's child)
    └── swarmd.run <swarm>            the run, from start to end (emitted when it ends)
        ├── chat swarmd-smart         CLIENT, an LLM call made by the run itself
        │                             (planner, reducer, supervisor, judge: swarmd.agent says which)
        ├── swarmd.agent agent-1      one per agent (agent loop child workflow)
        │   ├── chat swarmd-fast      CLIENT, each LLM call of the agent, GenAI attributes
        │   └── swarmd.tool calculator  each tool call of the agent
        └── ...

Workflows are replayed, so no span is ever started in workflow code while it
replays. Run and agent spans have **deterministic span ids** derived from the
run id and the agent's workflow instance id (:func:`span_id_for`), so the LLM
call activities (which may run in any replica, long after the HTTP request)
can parent their spans without any shared state: the trace id travels with the
run as a W3C ``traceparent`` (``SwarmInput.trace`` -> ``AgentInput.trace`` ->
``LLMRequest.trace``), and the span ids are recomputed where needed.

* the run span is emitted by the run tracker when it sees the run end
  (:mod:`swarmd.engine.tracker`), with the workflow's own start and end times;
* an agent span is emitted by the agent loop's wrapper when the loop returns
  outside a replay (:func:`traced_agent_loop`), spanning the loop's first and
  last orchestration steps (times from the workflow history);
* LLM and tool spans are real, live spans in the activities.

The run's trace context is also handed to daprd on the start call (gRPC
``traceparent`` metadata, :func:`propagate_to_dapr`): daprd passes it down to
every activity of the run, where the Dapr SDK opens its own ``activity: <name>``
span, and, when the sidecar exports its workflow spans (Dapr Configuration
``tracing``), those join the same trace under the run span. Our LLM and tool
spans link to the SDK's activity span.

Export: OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, otherwise JSON
lines to ``<data dir>/traces.jsonl`` (``SWARMD_TRACE_EXPORT=file``), the
console (``console``) or nowhere (``none``).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from swarmd import __version__

log = logging.getLogger("swarmd.telemetry")

TRACER_NAME = "swarmd"
_PROPAGATOR = TraceContextTextMapPropagator()
#: the span id the next span started in this context gets (see DeterministicIds)
_NEXT_SPAN_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "swarmd_next_span_id", default=None
)
_NEXT_TRACE_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "swarmd_next_trace_id", default=None
)


def global_tracer() -> Tracer:
    """The tracer of the process's provider (set by the entrypoint; no-op until then)."""
    return trace.get_tracer(TRACER_NAME)


#: the run the current code works for (logs carry it)
RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("swarmd_run_id", default=None)


class DeterministicIds(RandomIdGenerator):
    """Random ids, except where swarmd asks for a specific span id (run and agent spans)."""

    def generate_span_id(self) -> int:
        wanted = _NEXT_SPAN_ID.get()
        return wanted if wanted is not None else super().generate_span_id()

    def generate_trace_id(self) -> int:
        wanted = _NEXT_TRACE_ID.get()
        return wanted if wanted is not None else super().generate_trace_id()


def tracer_provider(
    exporter: SpanExporter | None = None,
    *,
    processor: SpanProcessor | None = None,
    service_name: str = "swarmd",
) -> TracerProvider:
    """A provider with swarmd's id generator and resource; spans go to ``exporter``
    (batched) or ``processor``."""
    resource = Resource.create(
        {
            "service.name": service_name,
            "service.version": __version__,
            "service.instance.id": os.environ.get("POD_NAME") or f"{os.uname().nodename}",
        }
    )
    provider = TracerProvider(resource=resource, id_generator=DeterministicIds())
    if processor is not None:
        provider.add_span_processor(processor)
    elif exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _jsonl(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + os.linesep


def setup_tracing(
    *, otlp_endpoint: str | None, export: str, data_dir: Path
) -> TracerProvider | None:
    """Install the process's tracer provider (entrypoints only). Returns it, or None when
    tracing is off."""
    exporter: SpanExporter
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
        where = f"OTLP {otlp_endpoint}"
    elif export == "file":
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "traces.jsonl"
        out: IO[str] = path.open("a", buffering=1)  # lives as long as the process
        exporter = ConsoleSpanExporter(out=out, formatter=_jsonl)
        where = str(path)
    elif export == "console":
        exporter = ConsoleSpanExporter(formatter=_jsonl)
        where = "console"
    else:
        return None
    provider = tracer_provider(exporter)
    trace.set_tracer_provider(provider)
    log.info("tracing to %s", where)
    return provider


# -- ids and carriers ------------------------------------------------------------


def span_id_for(kind: str, key: str) -> int:
    """The deterministic span id of a run (``kind="run"``, key = run id) or an agent
    (``kind="agent"``, key = its workflow instance id)."""
    digest = hashlib.sha256(f"swarmd/{kind}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def traceparent(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(value: str | None) -> SpanContext | None:
    if not value:
        return None
    ctx = trace.get_current_span(_PROPAGATOR.extract({"traceparent": value})).get_span_context()
    return ctx if ctx.is_valid else None


def run_span_context(run_id: str, parent: SpanContext | None) -> SpanContext:
    """The run span's context: the parent's trace (the HTTP request's) or a new one."""
    if parent is not None and parent.is_valid:
        trace_id, flags = parent.trace_id, parent.trace_flags
    else:
        trace_id, flags = RandomIdGenerator().generate_trace_id(), TraceFlags(TraceFlags.SAMPLED)
    return SpanContext(trace_id, span_id_for("run", run_id), is_remote=True, trace_flags=flags)


def context_of(span_ctx: SpanContext | None) -> Context | None:
    """An OTel context whose current span is ``span_ctx`` (for explicit parenting)."""
    if span_ctx is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span_ctx))


def step_parent(trace_value: str | None, run_id: str, workflow_id: str) -> SpanContext | None:
    """Parent of a step (LLM or tool call) made by workflow ``workflow_id`` of run ``run_id``:
    the agent's span for an agent loop, the run's span for the run's own calls."""
    run_ctx = parse_traceparent(trace_value)
    if run_ctx is None:
        return None
    if workflow_id and workflow_id != run_id:
        return SpanContext(
            run_ctx.trace_id,
            span_id_for("agent", workflow_id),
            is_remote=True,
            trace_flags=run_ctx.trace_flags,
        )
    return run_ctx


def links_to_current() -> Sequence[trace.Link]:
    """A link to the span current here (the Dapr SDK's activity span), if any."""
    cur = trace.get_current_span().get_span_context()
    return [trace.Link(cur)] if cur.is_valid else []


def emit_span(
    tracer: Tracer,
    name: str,
    *,
    span_id: int,
    parent: SpanContext | None,
    start: datetime,
    end: datetime,
    attributes: dict[str, Any],
    error: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    trace_id: int | None = None,
) -> None:
    """Record a finished span with a chosen id and times (run and agent spans). Without
    a parent it is a root span in trace ``trace_id``."""
    token = _NEXT_SPAN_ID.set(span_id)
    trace_token = _NEXT_TRACE_ID.set(trace_id)
    try:
        span = tracer.start_span(
            name,
            context=context_of(parent) if parent is not None else Context(),
            kind=kind,
            attributes={k: v for k, v in attributes.items() if v is not None},
            start_time=_ns(start),
        )
    finally:
        _NEXT_SPAN_ID.reset(token)
        _NEXT_TRACE_ID.reset(trace_token)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=max(_ns(end), _ns(start)))


def _ns(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1e9)


@contextmanager
def run_scope(run_id: str | None) -> Iterator[None]:
    """Mark the code inside as working for ``run_id`` (JSON logs carry it)."""
    token = RUN_ID.set(run_id)
    try:
        yield
    finally:
        RUN_ID.reset(token)


# -- the agent loop's span ----------------------------------------------------------


def traced_agent_loop(
    fn: Callable[..., Generator[Any, Any, Any]], tracer: Callable[[], Tracer]
) -> Callable[..., Generator[Any, Any, Any]]:
    """Wrap the agent loop workflow so that, when it returns outside a replay, its span
    is recorded (deterministic id, start and end times from the workflow history). The
    wrapped workflow's behaviour and its history are unchanged."""

    def agent_loop(ctx: Any, raw: Any) -> Generator[Any, Any, Any]:
        started: datetime = ctx.current_utc_datetime
        # Not in a ``finally``: an episode that stops at a pending task abandons the
        # generator (GeneratorExit when it is collected), which is no end of the agent.
        try:
            out = yield from fn(ctx, raw)
        except Exception as exc:
            if not ctx.is_replaying and isinstance(raw, dict):
                agent_span(
                    tracer(),
                    raw,
                    ctx.instance_id,
                    started,
                    ctx.current_utc_datetime,
                    None,
                    f"{type(exc).__name__}: {exc}",
                )
            raise
        if not ctx.is_replaying and isinstance(raw, dict):
            agent_span(tracer(), raw, ctx.instance_id, started, ctx.current_utc_datetime, out, None)
        return out

    agent_loop.__name__ = getattr(fn, "__name__", "agent_loop")
    agent_loop.__doc__ = fn.__doc__
    return agent_loop


def agent_span(
    tracer: Tracer,
    raw: dict[str, Any],
    instance_id: str,
    started: datetime,
    ended: datetime,
    out: Any,
    error: str | None,
) -> None:
    """Record the span of agent ``raw["agent"]`` of run ``raw["run_id"]`` (``raw["trace"]``
    is the run's traceparent), id derived from ``instance_id`` (its loop's workflow id,
    or ``<run>.<step key>`` for an agent run inside a group)."""
    try:
        run_ctx = parse_traceparent(raw.get("trace"))
        if run_ctx is None:
            return
        usage = (out or {}).get("usage") or {} if isinstance(out, dict) else {}
        status = out.get("status") if isinstance(out, dict) else None
        emit_span(
            tracer,
            f"swarmd.agent {raw.get('agent')}",
            span_id=span_id_for("agent", instance_id),
            parent=run_ctx,
            start=started,
            end=ended,
            attributes={
                "swarmd.run_id": raw.get("run_id"),
                "swarmd.agent": raw.get("agent"),
                "swarmd.workflow_id": instance_id,
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": raw.get("agent"),
                "gen_ai.request.model": raw.get("model"),
                "gen_ai.usage.input_tokens": usage.get("prompt_tokens"),
                "gen_ai.usage.output_tokens": usage.get("completion_tokens"),
                "swarmd.agent.status": status,
                "swarmd.agent.turns": (out or {}).get("turns") if isinstance(out, dict) else None,
            },
            error=error or ((out or {}).get("error") if status == "failed" else None),
        )
    except Exception:  # telemetry must never fail a workflow step
        log.debug("agent span not recorded", exc_info=True)


# -- into Dapr -----------------------------------------------------------------------


class _StartTrace(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends a run's traceparent (``SwarmInput.trace``) as gRPC metadata on the
    workflow start call, where daprd picks it up as the workflow's parent context."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        method = details.method
        if isinstance(method, bytes):  # grpc.aio hands the method name as bytes
            method = method.decode("ascii", "replace")
        value = _start_traceparent(str(method), request)
        if value is not None:
            metadata = grpc.aio.Metadata(*(tuple(details.metadata or ())))
            metadata.add("traceparent", value)
            details = grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
            )
        return await continuation(details, request)


def _start_traceparent(method: str, request: Any) -> str | None:
    if not method.endswith("/StartInstance"):
        return None
    try:
        raw = json.loads(request.input.value)
    except (AttributeError, ValueError, TypeError):
        return None
    value = raw.get("trace") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and parse_traceparent(value) else None


def propagate_to_dapr(wf_client: Any) -> bool:
    """Make ``wf_client`` (a ``DaprWorkflowClient``, before its first call) hand each
    run's trace context to daprd. The SDK has no public hook for client interceptors,
    so this reaches its inner gRPC client; False (and nothing changed) if that moved."""
    inner = getattr(wf_client, "_DaprWorkflowClient__obj", None)
    interceptors = getattr(inner, "_interceptors", None)
    if not isinstance(interceptors, list) or getattr(inner, "_channel", None) is not None:
        log.warning("trace context not handed to daprd: Dapr SDK client layout changed")
        return False
    interceptors.append(_StartTrace())
    return True
