"""``/v1/runs/{run_id}/...``: watch a run (server-sent events) and steer it.

Stream its progress, raise external events (e.g. a spec's approval gate),
terminate, pause, resume and purge it.

Every action first reads the run's status and refuses transitions that make no
sense with a 409, rather than leaving it to the sidecar: Dapr silently accepts
pause, resume, terminate and events on finished runs, and a resume of a run that
is not suspended makes the Python SDK's worker fail that run ("Don't know how to
handle event of type 'executionResumed'"). Actions on one run are serialized in
this process, and pause/resume wait (briefly) until the status reflects them, so
a double-clicked resume is a 409, not a failed run.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import grpc
from dapr.ext.workflow import WorkflowState, WorkflowStatus
from dapr.ext.workflow.aio import DaprWorkflowClient
from fastapi import APIRouter, Body, Depends, Header, Path, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from swarmd.api.auth import CallerDep, authenticate
from swarmd.api.deps import (
    CatalogDep,
    Services,
    ServicesDep,
    SettingsDep,
    WorkflowClientDep,
    get_wf_client,
    read_run,
    read_state,
)
from swarmd.api.runs import _STATUS, RunView, view, visible, with_live
from swarmd.engine.catalog import RunStatus
from swarmd.errors import (
    DependencyUnavailable,
    RunNotFound,
    RunStateConflict,
    SwarmdError,
    ValidationFailed,
)
from swarmd.identity.caller import Caller

router = APIRouter(prefix="/v1/runs", tags=["run control"], dependencies=[Depends(authenticate)])

EVENT_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
_EVENT_NAME = re.compile(EVENT_NAME)
FINISHED = frozenset({WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.TERMINATED})
ACTIVE = frozenset({WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.STALLED})
PAUSED = frozenset({WorkflowStatus.SUSPENDED})
#: how long pause/resume wait for the status to reflect them before answering anyway
SETTLE_S = 5.0
#: a stream gives up after this many failed reads in a row (at SWARMD_SSE_POLL_S apart)
STREAM_MAX_FAILURES = 20

RunId = Annotated[str, Path(description="Run id returned by POST /v1/runs", max_length=200)]


class RunAction(BaseModel):
    """A control action the sidecar accepted; it takes effect asynchronously."""

    run_id: str
    action: Literal["terminate", "pause", "resume", "event"]
    previous_status: RunStatus = Field(description="The run's status when the action was sent")
    event: str | None = Field(None, description="Name of the raised event (action 'event')")


class TerminateRun(BaseModel):
    """Optional body of ``POST /v1/runs/{run_id}/terminate``."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types exactly as the schema
    reason: str | None = Field(
        None, max_length=2000, description="Recorded as the terminated run's output"
    )


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


_ERRORS = {
    401: "Missing, wrong or revoked bearer token",
    404: "No run with that id (or it is another user's)",
    409: "The run's status does not allow this action (error.status says what it is)",
    422: "Invalid input; error.field names it",
    503: "The Dapr sidecar is not reachable",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error status codes."""
    return {c: {"model": ErrorResponse, "description": _ERRORS[c]} for c in codes}


#: run id -> (lock, number of requests holding or awaiting it)
_locks: dict[str, tuple[asyncio.Lock, int]] = {}


@asynccontextmanager
async def _serialized(run_id: str) -> AsyncIterator[None]:
    """Control actions on one run, one at a time in this process."""
    lock, users = _locks.get(run_id, (asyncio.Lock(), 0))
    _locks[run_id] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = _locks[run_id]
        if users == 1:
            del _locks[run_id]
        else:
            _locks[run_id] = (lock, users - 1)


def _status(state: WorkflowState) -> RunStatus:
    return _STATUS[state.runtime_status]


def _not_found(run_id: str) -> RunNotFound:
    return RunNotFound(f"no run with id {run_id!r}", field="run_id")


def _map_rpc(exc: grpc.RpcError, run_id: str) -> SwarmdError:
    """The sidecar's gRPC errors as our errors (text measured on daprd 1.18.2)."""
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    if "no such instance exists" in details:
        return _not_found(run_id)
    if "has not yet completed" in details:
        return RunStateConflict(
            f"run {run_id!r} is still running: terminate it first", field="run_id"
        )
    return DependencyUnavailable(f"the Dapr sidecar refused the call for run {run_id!r}: {details}")


async def _read(
    services: Services, client: DaprWorkflowClient, run_id: str, payloads: bool
) -> WorkflowState | None:
    """The run's state (its current generation's: act on ``state.instance_id``);
    retries transient sidecar errors, then maps them (404/409/503)."""
    return await read_run(
        services, client, run_id, payloads=payloads, map_error=lambda exc: _map_rpc(exc, run_id)
    )


async def _require(
    services: Services,
    client: DaprWorkflowClient,
    caller: Caller,
    run_id: str,
    allowed: frozenset[WorkflowStatus],
    refusal: str,
) -> WorkflowState:
    """The run's state if the caller may see it and its status is in ``allowed``:
    404 if it does not exist or is another user's, 409 if the status refuses."""
    state = visible(caller, await _read(services, client, run_id, payloads=not caller.is_operator))
    if state is None:
        raise _not_found(run_id)
    if state.runtime_status not in allowed:
        current = _status(state)
        raise RunStateConflict(
            f"run {run_id!r} is {current}: {refusal}", field="run_id", status=current
        )
    return state


async def _call(call: Awaitable[None], run_id: str) -> None:
    try:
        await call
    except grpc.RpcError as exc:
        raise _map_rpc(exc, run_id) from exc


async def _settle(
    client: DaprWorkflowClient, instance: str, done: frozenset[WorkflowStatus]
) -> None:
    """Wait until the workflow's status is in ``done`` (or gone), at most ``SETTLE_S``."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        state = await read_state(
            client, instance, payloads=False, map_error=lambda exc: _map_rpc(exc, instance)
        )
        if state is None or state.runtime_status in done:
            return
        await asyncio.sleep(0.05)


# -- actions ---------------------------------------------------------------


@router.post(
    "/{run_id}/terminate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAction,
    summary="Terminate a run and its agent workflows",
    responses=_errors(401, 404, 409, 503),
)
async def terminate_run(
    run_id: RunId,
    services: ServicesDep,
    caller: CallerDep,
    body: Annotated[TerminateRun | None, Body()] = None,
) -> RunAction:
    """Stop a pending, running or suspended run, recursively: its child agent
    workflows stop too. LLM calls already in flight finish, but nothing new starts.
    The run ends ``terminated`` with ``{"reason": ...}`` as its output. 409 if it
    has already finished."""
    client = get_wf_client(services)  # after validation: bad input is 4xx even without a sidecar
    async with _serialized(run_id):
        state = await _require(
            services, client, caller, run_id, ACTIVE | PAUSED, "it has already finished"
        )
        reason = body.reason if body else None
        await _call(
            client.terminate_workflow(state.instance_id, output={"reason": reason}, recursive=True),
            run_id,
        )
    return RunAction(run_id=run_id, action="terminate", previous_status=_status(state))


@router.post(
    "/{run_id}/pause",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAction,
    summary="Pause (suspend) a run",
    responses=_errors(401, 404, 409, 503),
)
async def pause_run(
    run_id: RunId, client: WorkflowClientDep, services: ServicesDep, caller: CallerDep
) -> RunAction:
    """Suspend a pending or running run: it reports ``suspended`` and takes no new
    step until resumed (agent workflows already started finish the step they are
    in; their results wait for the resume). 409 if it is already suspended or has
    finished."""
    async with _serialized(run_id):
        state = await _require(
            services, client, caller, run_id, ACTIVE, "only a pending or running run pauses"
        )
        await _call(client.pause_workflow(state.instance_id), run_id)
        await _settle(client, state.instance_id, FINISHED | PAUSED)
    return RunAction(run_id=run_id, action="pause", previous_status=_status(state))


@router.post(
    "/{run_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAction,
    summary="Resume a paused run",
    responses=_errors(401, 404, 409, 503),
)
async def resume_run(
    run_id: RunId, client: WorkflowClientDep, services: ServicesDep, caller: CallerDep
) -> RunAction:
    """Resume a suspended run where it stopped. 409 unless it is ``suspended``."""
    async with _serialized(run_id):
        state = await _require(
            services, client, caller, run_id, PAUSED, "only a suspended run resumes"
        )
        await _call(client.resume_workflow(state.instance_id), run_id)
        await _settle(client, state.instance_id, FINISHED | ACTIVE)
    return RunAction(run_id=run_id, action="resume", previous_status=_status(state))


@router.post(
    "/{run_id}/events/{name}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAction,
    summary="Raise an external event on a run",
    responses=_errors(401, 404, 409, 422, 503),
)
async def raise_event(
    run_id: RunId,
    name: Annotated[
        str,
        Path(
            description="Event name, e.g. 'approval' for a spec's approval gate",
            json_schema_extra={"pattern": EVENT_NAME},
        ),
    ],
    services: ServicesDep,
    caller: CallerDep,
    payload: Annotated[Any, Body(description="Optional JSON payload of the event")] = None,
) -> RunAction:
    """Deliver an event (with an optional JSON body as its payload) to a run that has
    not finished. A run waiting for that event continues; one not yet waiting keeps
    it until it asks. 409 if the run has finished (the event would be dropped)."""
    if not _EVENT_NAME.fullmatch(name):
        raise ValidationFailed(
            f"name: event name must match {EVENT_NAME} (got {name[:80]!r})", field="name"
        )
    client = get_wf_client(services)
    state = await _require(
        services, client, caller, run_id, ACTIVE | PAUSED, "it has finished and takes no events"
    )
    await _call(client.raise_workflow_event(state.instance_id, name, data=payload), run_id)
    return RunAction(run_id=run_id, action="event", previous_status=_status(state), event=name)


@router.delete(
    "/{run_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Purge a finished run",
    responses=_errors(401, 404, 409, 503),
)
async def purge_run(
    run_id: RunId,
    client: WorkflowClientDep,
    catalog: CatalogDep,
    services: ServicesDep,
    caller: CallerDep,
) -> Response:
    """Delete a finished run's state and history and those of its agent workflows;
    afterwards ``GET /v1/runs/{run_id}`` is 404. 409 while it is pending, running
    or suspended: terminate it first."""
    async with _serialized(run_id):
        state = await _require(
            services, client, caller, run_id, FINISHED, "terminate it before purging it"
        )
        # count its end first (usage, metrics, result events): nothing can once it is gone
        full = await _read(services, client, run_id, payloads=True)
        if full is not None:
            await services.tracker.settle(run_id, full)
        await _call(client.purge_workflow(state.instance_id, recursive=True), run_id)
        await catalog.remove(run_id)
        # then what the run stored under keys of its own (its call journal, ...)
        await services.run_keys.delete_all(run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- stream ----------------------------------------------------------------

_STREAM_DOC = """Server-sent events (``text/event-stream``):

* ``event: progress`` whenever the run's status or progress changes (the first
  one at once), ``data`` a run view as in ``GET /v1/runs/{run_id}``;
* ``: keep-alive`` comments after ``SWARMD_SSE_KEEPALIVE_S`` seconds of silence;
* ``event: end`` with the terminal status and output, then the stream closes;
* ``event: error`` (``data``: ``{"code", "message"}``) if the run disappears
  (purged) or the sidecar stays unreachable, then the stream closes.

Every event carries an ``id``: the run's state version (its last update time in
microseconds), the same on every connection and increasing. Each event is a
complete view of the run, so the latest one holds everything the earlier ones
did. A client that reconnects with the ``Last-Event-ID`` header of the last event
it received gets only what is newer: the current view at once if the run changed
while it was away (its ``end`` if the run finished), else nothing until the next
change. A reconnect after the ``end`` event answers 204 (no more events), which
also tells a browser's ``EventSource`` to stop reconnecting.
"""

#: ``Last-Event-ID``: an id this stream sent, or empty (none, as in the SSE spec)
EVENT_ID = r"^[0-9]{0,20}$"


def _sse(event: str, data: str, eid: int) -> str:
    return f"id: {eid}\nevent: {event}\ndata: {data}\n\n"


def event_id(state: WorkflowState) -> int:
    """The state's version: its last update time in microseconds (0 if unknown)."""
    t = state.last_updated_at
    return int(t.timestamp() * 1_000_000) if t is not None else 0


def _fingerprint(v: RunView) -> str:
    return json.dumps(
        [v.status, v.progress.model_dump() if v.progress else None, v.error], sort_keys=True
    )


async def _events(
    services: Services,
    client: DaprWorkflowClient,
    run_id: str,
    instance: str,
    poll_s: float,
    keepalive_s: float,
    after: int = 0,
) -> AsyncIterator[str]:
    """The run's events newer than id ``after`` (0: all, starting with the current view)."""
    seen = after
    last: str | None = None
    last_write = time.monotonic()
    failures = 0
    while True:
        try:
            state = await client.get_workflow_state(instance, fetch_payloads=True)
            if state is None:  # purged, or restarted by the supervisor as a new generation
                state = await _read(services, client, run_id, payloads=True)
                instance = state.instance_id if state is not None else instance
        except (grpc.RpcError, SwarmdError) as exc:
            failures += 1
            if failures >= STREAM_MAX_FAILURES:
                err = exc if isinstance(exc, SwarmdError) else _map_rpc(exc, run_id)
                yield _sse("error", json.dumps(err.to_dict()), seen + 1)
                return
        else:
            failures = 0
            if state is None:
                gone = RunNotFound(f"run {run_id!r} no longer exists (purged?)", field="run_id")
                yield _sse("error", json.dumps(gone.to_dict()), seen + 1)
                return
            v = view(state, run_id)
            eid = event_id(state)
            # agents done inside engine v2's groups version the stream too
            v, live_at = await with_live(v, services.live)
            eid = max(eid, live_at)
            if state.runtime_status in FINISHED:
                yield _sse("end", v.model_dump_json(), max(eid, seen + 1))
                return
            fp = _fingerprint(v)
            if eid > seen and fp != last:
                last, seen, last_write = fp, eid, time.monotonic()
                yield _sse("progress", v.model_dump_json(), eid)
            elif last is None:
                last = fp  # resumed: the client has this view already
        if time.monotonic() - last_write >= keepalive_s:
            last_write = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(min(poll_s, keepalive_s))


@router.get(
    "/{run_id}/stream",
    summary="Stream a run's progress (server-sent events)",
    description=_STREAM_DOC,
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The event stream"},
        204: {"description": "Resumed after the run's end event: nothing more will come"},
        **_errors(401, 404, 422, 503),
    },
)
async def stream_run(
    run_id: RunId,
    client: WorkflowClientDep,
    settings: SettingsDep,
    services: ServicesDep,
    caller: CallerDep,
    last_event_id: Annotated[
        str,
        Header(
            alias="Last-Event-ID",
            pattern=EVENT_ID,
            description="id of the last event received: resume after it (empty: from the start)",
        ),
    ] = "",
) -> Response:
    state = visible(caller, await _read(services, client, run_id, payloads=not caller.is_operator))
    if state is None:
        raise _not_found(run_id)
    after = int(last_event_id) if last_event_id else 0
    if after and state.runtime_status in FINISHED and after >= event_id(state):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return StreamingResponse(
        _events(
            services,
            client,
            run_id,
            state.instance_id,
            settings.sse_poll_s,
            settings.sse_keepalive_s,
            after,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
