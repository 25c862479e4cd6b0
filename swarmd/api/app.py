"""The FastAPI application: lifespan wiring, health, one error handler."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarmd import __version__, ui
from swarmd.api import (
    agents,
    locks,
    observability,
    openapi,
    pubsub,
    revivals,
    run_agents,
    runs,
    slack,
    users,
)
from swarmd.api.deps import Services, ServicesDep
from swarmd.config import Settings
from swarmd.engine.health import Persistent, SidecarHealth, probe
from swarmd.errors import (
    InvalidJson,
    PayloadTooLarge,
    SwarmdError,
    TooManyRequests,
    UnsupportedMediaType,
    validation_failed,
)
from swarmd.metrics import Metrics
from swarmd.telemetry import TRACER_NAME, global_tracer

log = logging.getLogger("swarmd.api")


def _error_response(exc: SwarmdError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code, headers=headers)


class BodyLimit:
    """Refuse bodies above ``limit`` bytes with 413, before the route reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = PayloadTooLarge(
            f"request body exceeds {self.limit} bytes (SWARMD_MAX_BODY_BYTES)", limit=self.limit
        )
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _error_response(too_large)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise too_large
            return msg

        try:
            await self.app(scope, limited, send)
        except PayloadTooLarge as exc:
            await _error_response(exc)(scope, receive, send)


class BodyMediaTypes:
    """Refuse a request body whose media type its operation does not take with 415,
    naming ``content-type``. What an operation takes is what the OpenAPI document says
    (its ``requestBody.content``): ``application/json`` (or ``+json``) everywhere,
    except where a route declares its own in ``openapi_extra`` (Slack's slash commands
    are ``application/x-www-form-urlencoded``). So the document and this check cannot
    disagree."""

    JSON = ("application/json",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._rules: list[tuple[re.Pattern[str], str, tuple[str, ...]]] | None = None

    def _accepted(self, scope: Scope) -> tuple[str, ...] | None:
        """The media types of the operation the request is for; None when it is for no
        documented operation (routing answers 404 or 405, this check stays out of it)."""
        if self._rules is None:  # the document is built once; so are these
            doc = scope["app"].openapi()
            self._rules = []
            for path, ops in doc.get("paths", {}).items():
                rx = re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)) + "$")
                for method, op in ops.items():
                    kinds = tuple((op.get("requestBody") or {}).get("content") or {})
                    self._rules.append((rx, method.upper(), kinds or self.JSON))
        for rx, method, kinds in self._rules:
            if method == scope["method"] and rx.match(scope["path"]):
                return kinds
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            headers = dict(scope.get("headers") or [])
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode()
            has_body = headers.get(b"content-length", b"0") != b"0" or (
                b"transfer-encoding" in headers
            )
            accepted = self._accepted(scope) if has_body else None
            json_ok = accepted is not None and "application/json" in accepted
            json_ok = json_ok and kind.endswith("+json")
            if accepted is not None and kind not in accepted and not json_ok:
                refusal = UnsupportedMediaType(
                    f"content-type: send the body as {' or '.join(accepted)} (got {kind!r})",
                    field="content-type",
                )
                await _error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    settings: Settings, *, start_engine: bool = True, tracer_provider: Any = None
) -> FastAPI:
    """The app. ``start_engine=False`` serves the API without a sidecar (docs, schema).
    Spans go to ``tracer_provider``, or to the process's (set by the entrypoint).

    Its lifespan gets every service from the composition root
    (:func:`swarmd.compose.services.open_services`) as one typed
    :class:`~swarmd.api.deps.Services` in the lifespan state; routes reach them
    through the ``Annotated`` dependencies of :mod:`swarmd.api.deps`. A new
    resource is one router module here, included below."""
    metrics = Metrics()
    tracer: Callable[[], Any] = global_tracer
    if tracer_provider is not None:
        tracer = lambda: tracer_provider.get_tracer(TRACER_NAME)  # noqa: E731

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Services]]:
        from swarmd.compose.services import open_services  # the composition root

        try:
            async with open_services(
                settings, metrics, tracer, start_worker=start_engine
            ) as services:
                yield {"services": services}
        finally:
            _flush_spans(tracer_provider)

    app = FastAPI(
        title="swarmd",
        version=__version__,
        description="Start and steer durable AI agent swarms running on Dapr workflows.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyMediaTypes)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(observability.TraceRequests, tracer=tracer)

    @app.exception_handler(SwarmdError)
    async def swarmd_error(_: Request, exc: SwarmdError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Starlette's own refusals (no such path, method not allowed) in our error body;
        a 405's ``Allow`` lists every method of the path (Starlette names one route's)."""
        body = {"code": f"http_{exc.status_code}", "message": str(exc.detail)}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            methods: set[str] = set()
            for route in request.app.router.routes:
                if route.matches(request.scope)[0] != Match.NONE:
                    methods |= getattr(route, "methods", None) or set()
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"error": body}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        bad_json = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            where = (bad_json.get("ctx") or {}).get("error", "")
            return _error_response(InvalidJson(f"body: not valid JSON ({where})", field="body"))
        return _error_response(validation_failed(exc.errors(), drop=("body",), whole="body"))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process serves HTTP."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        responses={503: {"description": "Not ready: the worker or the sidecar is not up"}},
    )
    async def readyz(services: ServicesDep) -> JSONResponse:
        """Readiness: the workflow worker is connected to its Dapr sidecar."""
        ready = services.ready
        sidecar = False
        try:
            async with httpx.AsyncClient(timeout=2) as c:
                r = await c.get(f"http://127.0.0.1:{settings.dapr_http_port}/v1.0/healthz")
                sidecar = r.status_code < 300
        except httpx.HTTPError:
            sidecar = False
        ok = ready and sidecar
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "engine": ready, "sidecar": sidecar},
            status_code=200 if ok else 503,
        )

    worker_seen = Persistent()

    @app.get(
        "/livez",
        tags=["health"],
        responses={503: {"description": "The worker lost its stream to daprd: restart the app"}},
    )
    async def livez(services: ServicesDep) -> JSONResponse:
        """Liveness of the pair: fails (503) when daprd is healthy but this app's workflow
        worker has held no stream to it for ``SWARMD_WORKER_LOST_AFTER_S`` (the worker
        lost its stream and did not get it back: restart the app). A dead or wedged daprd
        does not fail it: that is daprd's own probe's business."""
        if not services.ready:
            return JSONResponse({"status": "starting"})
        h = await asyncio.to_thread(_probe, settings.dapr_http_port)
        held = worker_seen.see(h.diagnosis)
        lost = h.diagnosis == "no_worker" and held >= settings.worker_lost_after_s
        body = {"status": "worker_lost" if lost else "ok", "sidecar": h.diagnosis, "for_s": held}
        return JSONResponse(body, status_code=503 if lost else 200)

    from swarmd.agents.config import load_templates
    from swarmd.engine.spec import SpecRegistry

    openapi.document(  # the swarms and templates this process serves, as its schemas say
        app,
        settings,
        SpecRegistry.for_settings(settings.specs_dir),
        list(load_templates(settings.agent_templates_dir)),
    )
    # one router per resource (a new resource: a module with `router`, added here)
    app.include_router(runs.router)
    app.include_router(locks.router)
    app.include_router(run_agents.router)
    app.include_router(agents.router)
    app.include_router(users.router)
    app.include_router(slack.router)
    app.include_router(observability.router)
    app.include_router(revivals.router)
    if settings.pubsub_enabled:
        app.include_router(pubsub.router(settings))
    app.add_api_route(
        "/metrics",
        observability.metrics_endpoint(metrics),
        methods=["GET"],
        tags=["health"],
        include_in_schema=True,
    )
    ui.mount(app)  # the run viewer at /ui
    return app


def _probe(dapr_http_port: int) -> SidecarHealth:
    with httpx.Client(timeout=2) as c:
        return probe(c, dapr_http_port)


def _flush_spans(tracer_provider: Any) -> None:
    """Export the spans still queued: uvicorn re-raises SIGTERM once it has shut down,
    so nothing after the server returns would run."""
    from opentelemetry import trace

    for provider in {id(p): p for p in (tracer_provider, trace.get_tracer_provider())}.values():
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush(5000)
