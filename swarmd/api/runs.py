"""``/v1/runs``: start a swarm run, read it, watch it (server-sent events) and steer it.

Stream its progress, raise external events (e.g. a spec's approval gate),
terminate, pause, resume and purge it.

Every control action first reads the run's status and refuses transitions that
make no sense with a 409, rather than leaving it to the sidecar: Dapr silently
accepts pause, resume, terminate and events on finished runs, and a resume of a
run that is not suspended makes the Python SDK's worker fail that run ("Don't
know how to handle event of type 'executionResumed'"). Actions on one run are
serialized in this process, and pause/resume wait (briefly) until the status
reflects them, so a double-clicked resume is a 409, not a failed run.

Purging a run also deletes the state keys recorded in its key index
(:class:`~swarmd.engine.runkeys.RunKeys`: payload blobs, checkpoints, journal).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

import grpc
from annotated_types import Ge, Le
from dapr.ext.workflow import WorkflowState, WorkflowStatus
from dapr.ext.workflow.aio import DaprWorkflowClient
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarmd.api import observability
from swarmd.api.auth import CallerDep, OwnerScopeDep, authenticate
from swarmd.api.deps import (
    CatalogDep,
    PageCursor,
    PageLimit,
    PayloadsDep,
    RunKeysDep,
    Services,
    ServicesDep,
    SettingsDep,
    WorkflowClientDep,
    get_wf_client,
    read_run,
    read_state,
)
from swarmd.api.openapi import errors
from swarmd.engine import names
from swarmd.engine.catalog import RunQuery, RunRecord, RunStatus, decode_cursor, final_update
from swarmd.engine.jsontypes import integral
from swarmd.engine.live import LiveProgress
from swarmd.engine.models import Progress, SwarmInput, Usage
from swarmd.engine.spec import NAME as SWARM_NAME
from swarmd.engine.spec import SpecRegistry, parse_spec
from swarmd.engine.status import ACTIVE, ENDED, PAUSED
from swarmd.engine.supervisor import StartInput
from swarmd.errors import (
    DependencyUnavailable,
    RunConflict,
    RunNotFound,
    RunStateConflict,
    SwarmdError,
    ValidationFailed,
    validation_failed,
)
from swarmd.identity.caller import Caller

router = APIRouter(prefix="/v1/runs", tags=["runs"], dependencies=[Depends(authenticate)])

STATUS: dict[WorkflowStatus, RunStatus] = {
    WorkflowStatus.PENDING: "pending",
    WorkflowStatus.RUNNING: "running",
    WorkflowStatus.COMPLETED: "completed",
    WorkflowStatus.FAILED: "failed",
    WorkflowStatus.TERMINATED: "terminated",
    WorkflowStatus.SUSPENDED: "suspended",
    WorkflowStatus.STALLED: "running",
    WorkflowStatus.UNKNOWN: "unknown",
}


class RunInputBody(BaseModel):
    """``input`` of a start request."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types exactly as the schema
    task: str = Field(min_length=1, max_length=100_000, description="what the swarm should do")
    agents: Annotated[int, Ge(1), Le(10_000), integral] | None = Field(
        None, description="scatter_gather: how many agents to fan out to"
    )
    user: str | None = Field(None, max_length=200, description="end user id, seen by the gateway")
    max_parallel: Annotated[int, Ge(1), Le(10_000), integral] | None = Field(
        None, description="override the spec's limits.max_parallel"
    )


class StartRun(BaseModel):
    """Body of ``POST /v1/runs``: a named swarm (``swarm``) or an inline ``spec``."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types exactly as the schema
    swarm: str | None = Field(
        None,
        description="name of a swarm spec (built-in: scatter_gather, supervisor, debate, pipeline)",
        examples=["scatter_gather"],
    )
    spec: dict[str, Any] | None = Field(None, description="an inline swarm spec")
    input: dict[str, Any] = Field(description="e.g. {'task': '...', 'agents': 5}")
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$",
        description="Optional client-chosen id; starting the same id twice returns the first run",
    )


class RunAccepted(BaseModel):
    run_id: str
    swarm: str
    status: RunStatus
    created: bool = Field(description="False when the run already existed (idempotent start)")


class RunView(BaseModel):
    run_id: str
    swarm: str | None
    status: RunStatus
    progress: Progress | None = None
    usage: Usage | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    #: why a run ended early (status "completed"): "token_budget" or "deadline"
    stop_reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


def build_input(body: StartRun, run_id: str, specs: SpecRegistry) -> SwarmInput:
    if body.spec is not None and body.swarm is not None:
        raise ValidationFailed(
            "swarm: give a swarm name or an inline spec, not both", field="swarm"
        )
    if body.spec is not None:
        spec = parse_spec(body.spec)
    elif body.swarm is not None:
        spec = specs.get(body.swarm)
    else:
        raise ValidationFailed("swarm: give a swarm name or an inline spec", field="swarm")
    try:
        req = RunInputBody.model_validate(body.input)
    except ValidationError as exc:
        raise validation_failed(exc.errors(), prefix=("input",)) from exc
    if req.max_parallel is not None:
        spec = spec.model_copy(
            update={"limits": spec.limits.model_copy(update={"max_parallel": req.max_parallel})}
        )
    if req.agents is not None and spec.pattern != "scatter_gather":
        raise ValidationFailed(
            f"input.agents: only scatter_gather takes an agent count "
            f"({spec.name} is a {spec.pattern})",
            field="input.agents",
        )
    return SwarmInput(run_id=run_id, task=req.task, spec=spec, agents=req.agents, user=req.user)


def view(state: WorkflowState, run_id: str | None = None) -> RunView:
    """The run view of a workflow state (``run_id``: the run's, when the state is of a
    later generation's workflow)."""
    swarm: str | None = state.name
    if state.serialized_input:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            swarm = json.loads(state.serialized_input)["spec"]["name"]
    progress = None
    if state.serialized_custom_status:
        try:
            progress = Progress.model_validate_json(state.serialized_custom_status)
        except ValidationError:
            progress = None
    out = None
    if state.serialized_output:
        out = json.loads(state.serialized_output)
    err = state.failure_details.message if state.failure_details else None
    usage = progress.usage if progress else None
    if isinstance(out, dict) and "usage" in out:
        usage = Usage.model_validate(out["usage"])
    return RunView(
        run_id=run_id or state.instance_id,
        swarm=swarm,
        status=STATUS[state.runtime_status],
        progress=progress,
        usage=usage,
        output=out if isinstance(out, dict) else None,
        error=err,
        stop_reason=out.get("stop_reason") if isinstance(out, dict) else None,
        created_at=state.created_at.isoformat() if state.created_at else None,
        updated_at=state.last_updated_at.isoformat() if state.last_updated_at else None,
    )


async def with_live(v: RunView, live: LiveProgress) -> tuple[RunView, int]:
    """``v`` with the agents its groups finished since their workflow last heard (engine
    v2 reports a group's agents when the whole group completes; see swarmd.engine.live),
    and the time (µs) of that count, 0 when it adds nothing."""
    p = v.progress
    if v.status != "running" or p is None or p.phase != "agents":
        return v, 0
    done, at = await live.read(v.run_id)
    if done <= p.agents_done:
        return v, 0
    v.progress = p.model_copy(update={"agents_done": min(done, p.agents_total or done)})
    return v, at


def run_owner(state: WorkflowState) -> str | None:
    """The user who owns a run: ``input.user`` of a top-level swarm run (of any of its
    generations, ``<run>:g<n>``). None for runs without a user and for other workflows
    (agent loops, user agents), which only the operator sees through ``/v1/runs``."""
    if not state.serialized_input:
        return None
    try:
        inp = json.loads(state.serialized_input)
    except ValueError:
        return None
    run_id = state.instance_id.split(":", 1)[0]  # run ids have no ":"
    if not isinstance(inp, dict) or "spec" not in inp or inp.get("run_id") != run_id:
        return None
    user = inp.get("user")
    return user if isinstance(user, str) else None


def visible(caller: Caller, state: WorkflowState | None) -> WorkflowState | None:
    """``state`` if the caller may see that run, else None (answered as "no such run").
    For a user, ``state`` must have been read with its payloads (the input)."""
    if state is None or caller.is_operator:
        return state
    return state if caller.may_see(run_owner(state)) else None


def as_owner(caller: Caller, inp: SwarmInput) -> SwarmInput:
    """A user's run is owned by that user: ``input.user`` is the caller."""
    if caller.is_operator:
        return inp
    if inp.user is not None and inp.user != caller.user:
        raise ValidationFailed(
            f"input.user: a user token starts runs only as itself ({caller.user!r})",
            field="input.user",
        )
    return inp.model_copy(update={"user": caller.user})


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
    responses={
        200: {"model": RunAccepted, "description": "Run already existed"},
        **errors(429, _409="run_id exists with a different swarm or input"),
    },
)
async def start_run(
    body: StartRun, services: ServicesDep, response: Response, caller: CallerDep
) -> RunAccepted:
    """Start a swarm run. Answers 202 with the run id; 200 if ``run_id`` already exists.

    With a user token the run is owned by that user (``input.user``) and counts
    against its limits: ``SWARMD_USER_MAX_RUNS`` in flight and the start rate (429
    with ``Retry-After``)."""
    settings = services.settings
    run_id = body.run_id or uuid.uuid4().hex
    inp = as_owner(caller, build_input(body, run_id, services.specs))
    if (inp.agents or len(inp.spec.agents)) > settings.max_agents:
        raise ValidationFailed(
            f"input.agents: at most {settings.max_agents} agents per run", field="input.agents"
        )
    client = get_wf_client(services)  # after validation: bad input is 4xx even without a sidecar
    wf_name = names.PATTERNS[inp.spec.pattern]
    if body.run_id:
        existing = await read_run(services, client, run_id)
        if existing is not None:
            start = await services.supervisor.start_input(run_id, existing)
            return _existing(existing, start, wf_name, inp, response)
    limit = None
    if caller.user is not None:
        await services.identity.start_rate.take(caller.user)
        limit = settings.user_max_runs
    # its trace; the run index (where the runs-in-flight limit is checked)
    traced = await observability.run_starting(services.tracker, inp, limit)
    # listed from now on; owned (seen in a user's list) by input.user, as GET /{run_id}
    await services.catalog.add(run_id, inp.spec.name, inp.user, owner=inp.user)
    # what a fresh generation of the run starts from (the run supervisor)
    await services.supervisor.remember_input(run_id, wf_name, traced.model_dump(mode="json"))
    try:
        await client.schedule_new_workflow(wf_name, input=traced, instance_id=run_id)
    except grpc.RpcError as exc:  # lost a race with an identical concurrent start
        existing = await read_run(services, client, run_id)
        if existing is None:
            raise
        start = await services.supervisor.start_input(run_id, existing)
        return _existing(existing, start, wf_name, inp, response, cause=exc)
    observability.run_started(services.metrics, inp)
    return RunAccepted(run_id=run_id, swarm=inp.spec.name, status="pending", created=True)


def _existing(
    state: WorkflowState,
    start: StartInput | None,
    wf_name: str,
    inp: SwarmInput,
    response: Response,
    cause: Exception | None = None,
) -> RunAccepted:
    """200 for a start request that repeats the run's own (a client retrying), else 409.

    It is compared with the start input recorded before the run was scheduled
    (``start``), not with the workflow's: a workflow read in the moment daprd is still
    creating it has no input yet, and under chaos that turned a retried start into a
    409. Only the trace differs between two identical requests."""
    same_input = False
    if start is not None:
        stored = dict(start.input)
        stored.pop("trace", None)  # each start request has its own trace
        same_input = start.workflow == wf_name and stored == inp.model_dump(
            mode="json", exclude={"trace"}
        )
    if not same_input:
        raise RunConflict(
            f"run {inp.run_id!r} already exists with a different swarm or input",
            field="run_id",
        ) from cause
    response.status_code = status.HTTP_200_OK
    return RunAccepted(
        run_id=inp.run_id,
        swarm=inp.spec.name,
        status=STATUS[state.runtime_status],
        created=False,
    )


@router.get("/{run_id}", response_model=RunView, responses=errors(404))
async def get_run(
    run_id: str,
    client: WorkflowClientDep,
    payloads: PayloadsDep,
    services: ServicesDep,
    caller: CallerDep,
) -> RunView:
    """Status, progress, token usage, and the output or error of a run (a user token:
    of its own runs only; any other answers 404)."""
    state = visible(caller, await read_run(services, client, run_id))
    if state is None:
        raise RunNotFound(f"no run with id {run_id!r}", field="run_id")
    result, _ = await with_live(view(state, run_id), services.live)
    if result.output is not None and "[[swarmd-ref:" in (state.serialized_output or ""):
        # large agent answers travelled by reference: show the real text
        result.output = await payloads.resolve_any(result.output)
    return result


class RunList(BaseModel):
    """A page of ``GET /v1/runs``: newest first."""

    items: list[RunRecord]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null when there is nothing more. "
        "A page may hold fewer than limit items (even none) and still have a cursor: each "
        "request examines a bounded part of the catalog"
    )


#: an RFC 3339 date-time (JSON Schema's ``date-time``): date, time and offset
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"


def _instant(text: str | None, field: str) -> float | None:
    """An RFC 3339 date-time as a Unix time (a leap second counts as :59)."""
    if text is None:
        return None
    t = text.upper()
    if t[17:19] == "60":
        t = t[:17] + "59" + t[19:]
    try:
        return datetime.fromisoformat(t).timestamp()
    except ValueError as exc:
        raise ValidationFailed(f"{field}: not a date-time: {text[:40]!r}", field=field) from exc


def _instant_query(what: str) -> Any:
    return Query(
        pattern=RFC3339,
        json_schema_extra={"format": "date-time"},
        description=f"only runs started {what} (RFC 3339, e.g. 2026-12-01T09:00:00Z)",
    )


async def _live(
    services: Services, client: Any, recs: list[RunRecord]
) -> dict[str, RunRecord | None]:
    """Records of runs in flight with their current status, progress and usage
    (None: no such workflow, not scheduled yet or never)."""
    if client is None:
        return {}
    sem = asyncio.Semaphore(16)

    async def one(rec: RunRecord) -> RunRecord | None:
        async with sem:
            st = await read_run(services, client, rec.run_id, payloads=True)
        if st is None:
            return None
        if st.runtime_status in ENDED:
            return rec.model_copy(update=final_update(st))
        v = view(st, rec.run_id)
        return rec.model_copy(
            update={
                "status": v.status,
                "progress": v.progress,
                "usage": v.usage if v.usage is not None else rec.usage,
            }
        )

    fresh = await asyncio.gather(*(one(r) for r in recs))
    return {r.run_id: f for r, f in zip(recs, fresh, strict=True)}


@router.get("", response_model=RunList)
async def list_runs(
    services: ServicesDep,
    owner: OwnerScopeDep,
    status_: Annotated[
        list[RunStatus] | None,
        Query(alias="status", description="only runs in these statuses (repeat for several)"),
    ] = None,
    swarm: Annotated[
        str | None, Query(pattern=SWARM_NAME, description="only runs of this swarm")
    ] = None,
    user: Annotated[
        str | None, Query(min_length=1, max_length=200, description="only runs of this input.user")
    ] = None,
    started_after: Annotated[str | None, _instant_query("at or after")] = None,
    started_before: Annotated[str | None, _instant_query("before")] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> RunList:
    """Runs newest first, each with its status, progress summary, usage and cost, from
    the durable run catalog (ended runs too, until purged). Runs in flight show their
    live status and progress."""
    q = RunQuery(
        status=frozenset(status_ or ()),
        swarm=swarm,
        user=user,
        owner=owner,
        started_after=_instant(started_after, "started_after"),
        started_before=_instant(started_before, "started_before"),
        limit=limit,
        cursor=decode_cursor(cursor),
    )
    client = services.workflows  # None before the worker is up: stored records only
    items, nxt = await services.catalog.scan(q, lambda recs: _live(services, client, recs))
    return RunList(items=items, next_cursor=nxt.encode() if nxt else None)


# -- control -------------------------------------------------------------

EVENT_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
_EVENT_NAME = re.compile(EVENT_NAME)
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


#: what a run route's errors mean (the others as :mod:`swarmd.api.openapi` says)
_RUN_ERRORS = {
    401: "Missing, wrong or revoked bearer token",
    404: "No run with that id (or it is another user's)",
    409: "The run's status does not allow this action (error.status says what it is)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses of a run route."""
    return errors(*codes, **{f"_{c}": _RUN_ERRORS[c] for c in codes if c in _RUN_ERRORS})


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
    return STATUS[state.runtime_status]


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
        services, client, run_id, payloads=payloads, map_error=partial(_map_rpc, run_id=run_id)
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
            client, instance, payloads=False, map_error=partial(_map_rpc, run_id=instance)
        )
        if state is None or state.runtime_status in done:
            return
        await asyncio.sleep(0.05)


async def _control(
    services: Services,
    client: DaprWorkflowClient,
    caller: Caller,
    run_id: str,
    allowed: frozenset[WorkflowStatus],
    refusal: str,
    call: Callable[[str], Awaitable[None]],
    settle: frozenset[WorkflowStatus] | None = None,
) -> RunStatus:
    """The one sequence of every control action, serialized per run: read the run's
    current generation, refuse (404) unless ``caller`` may see it and (409) unless its
    status is in ``allowed``, ``call`` the
    sidecar with its instance id (errors mapped), then wait until the status is in
    ``settle``. Returns the status before."""
    async with _serialized(run_id):
        state = await _require(services, client, caller, run_id, allowed, refusal)
        await _call(call(state.instance_id), run_id)
        if settle is not None:
            await _settle(client, state.instance_id, settle)
    return _status(state)


def _action(path: str, summary: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The route decorator of a control action: 202 with a :class:`RunAction`."""
    return router.post(
        path,
        status_code=status.HTTP_202_ACCEPTED,
        response_model=RunAction,
        summary=summary,
        responses=error_responses(401, 404, 409, 503),
    )


# -- actions ---------------------------------------------------------------


@_action("/{run_id}/terminate", "Terminate a run and its agent workflows")
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
    reason = body.reason if body else None
    previous = await _control(
        services,
        client,
        caller,
        run_id,
        ACTIVE | PAUSED,
        "it has already finished",
        lambda iid: client.terminate_workflow(iid, output={"reason": reason}, recursive=True),
    )
    return RunAction(run_id=run_id, action="terminate", previous_status=previous)


@_action("/{run_id}/pause", "Pause (suspend) a run")
async def pause_run(
    run_id: RunId, client: WorkflowClientDep, services: ServicesDep, caller: CallerDep
) -> RunAction:
    """Suspend a pending or running run: it reports ``suspended`` and takes no new
    step until resumed (agent workflows already started finish the step they are
    in; their results wait for the resume). 409 if it is already suspended or has
    finished."""
    refusal = "only a pending or running run pauses"
    previous = await _control(
        services, client, caller, run_id, ACTIVE, refusal, client.pause_workflow, ENDED | PAUSED
    )
    return RunAction(run_id=run_id, action="pause", previous_status=previous)


@_action("/{run_id}/resume", "Resume a paused run")
async def resume_run(
    run_id: RunId, client: WorkflowClientDep, services: ServicesDep, caller: CallerDep
) -> RunAction:
    """Resume a suspended run where it stopped. 409 unless it is ``suspended``."""
    refusal = "only a suspended run resumes"
    previous = await _control(
        services, client, caller, run_id, PAUSED, refusal, client.resume_workflow, ENDED | ACTIVE
    )
    return RunAction(run_id=run_id, action="resume", previous_status=previous)


@router.post(
    "/{run_id}/events/{name}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAction,
    summary="Raise an external event on a run",
    responses=error_responses(401, 404, 409, 422, 503),
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
    responses=error_responses(401, 404, 409, 503),
)
async def purge_run(
    run_id: RunId,
    client: WorkflowClientDep,
    catalog: CatalogDep,
    run_keys: RunKeysDep,
    services: ServicesDep,
    caller: CallerDep,
) -> Response:
    """Delete a finished run's state and history and those of its agent workflows,
    and every state key recorded for it (large payloads, checkpoints); afterwards
    ``GET /v1/runs/{run_id}`` is 404. 409 while it is pending, running or
    suspended: terminate it first."""

    async def purge(instance: str) -> None:
        # count its end first (usage, metrics, result events): nothing can once it is gone
        full = await _read(services, client, run_id, payloads=True)
        if full is not None:
            await services.tracker.settle(run_id, full)
        # its keys next: if the purge fails after, a retried DELETE still finds the run
        await run_keys.delete_all(run_id)
        await client.purge_workflow(instance, recursive=True)
        await catalog.remove(run_id)

    await _control(services, client, caller, run_id, ENDED, "terminate it before purging it", purge)
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
            if state.runtime_status in ENDED:
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
        **error_responses(401, 404, 422, 503),
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
    if after and state.runtime_status in ENDED and after >= event_id(state):
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
