"""The API's side of observability: request spans, ``/metrics``, per-user usage,
and the hooks the run API calls when it starts a run.

* :class:`TraceRequests` opens a SERVER span per HTTP request (continuing the
  caller's W3C ``traceparent`` when it sends one); health and metrics probes
  are not traced.
* ``GET /metrics`` serves the app's Prometheus registry (no auth, like the
  health endpoints: it holds no run data, only counts).
* ``GET /v1/usage/users/{user}``: what a user's ended runs used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarmd import telemetry
from swarmd.api.auth import CallerDep, authenticate
from swarmd.api.deps import TrackerDep
from swarmd.engine.models import SwarmInput
from swarmd.engine.tracker import RunTracker, UserUsage
from swarmd.errors import NotFound
from swarmd.metrics import Metrics

_PROPAGATOR = TraceContextTextMapPropagator()
UNTRACED = frozenset({"/healthz", "/livez", "/readyz", "/metrics", "/favicon.ico"})

router = APIRouter(prefix="/v1/usage", tags=["usage"], dependencies=[Depends(authenticate)])


class TraceRequests:
    """ASGI middleware: one SERVER span per HTTP request, named after its route."""

    def __init__(self, app: ASGIApp, tracer: Callable[[], Tracer]) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNTRACED:
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []
        }
        method = str(scope.get("method", "GET"))
        path = str(scope.get("path", ""))
        status_code = 0

        async def send_status(msg: Message) -> None:
            nonlocal status_code
            if msg["type"] == "http.response.start":
                status_code = int(msg["status"])
            await send(msg)

        with self.tracer().start_as_current_span(
            f"{method} {path}",
            context=_PROPAGATOR.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                run_id = (scope.get("path_params") or {}).get("run_id")
                if run_id:
                    span.set_attribute("swarmd.run_id", str(run_id))
                if status_code:
                    span.set_attribute("http.response.status_code", status_code)
                    if status_code >= 500:
                        span.set_status(Status(StatusCode.ERROR))


def metrics_endpoint(metrics: Metrics) -> Callable[[], Any]:
    async def get_metrics() -> Response:
        """Prometheus metrics of this process (see swarmd.metrics for the series)."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return get_metrics


# -- hooks of the run API --------------------------------------------------------------


async def run_starting(
    tracker: RunTracker, inp: SwarmInput, max_per_user: int | None = None
) -> SwarmInput:
    """Before a run is scheduled: give it its trace and put it in the run index
    (429 if ``inp.user`` already has ``max_per_user`` runs there).
    Returns the input to schedule (with ``trace`` set)."""
    http = trace.get_current_span().get_span_context()
    parent = http if http.is_valid else None
    run_ctx = telemetry.run_span_context(inp.run_id, parent)
    traced = inp.model_copy(update={"trace": telemetry.traceparent(run_ctx)})
    await tracker.started(
        inp.run_id,
        {
            "swarm": inp.spec.name,
            "user": inp.user,
            "trace": traced.trace,
            "parent": telemetry.traceparent(parent) if parent is not None else None,
        },
        max_per_user,
    )
    return traced


def run_started(metrics: Metrics, inp: SwarmInput) -> None:
    """After the run was scheduled."""
    metrics.runs_started.labels(inp.spec.name).inc()


# -- usage -----------------------------------------------------------------------------


@router.get("/users/{user}", response_model=UserUsage)
async def user_usage(
    tracker: TrackerDep, user: Annotated[str, Path(min_length=1, max_length=200)], caller: CallerDep
) -> UserUsage:
    """Tokens, LLM calls and cost of a user's ended runs (``input.user`` of the start
    request); zeros for a user with none. A user token reads only its own user (any
    other answers 404)."""
    if not caller.may_see(user):
        raise NotFound(f"no usage for user {user!r}", field="user")
    return await tracker.user_usage(user)
