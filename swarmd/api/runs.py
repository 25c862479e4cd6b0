"""``/v1/runs``: start a swarm run and read its status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

import grpc
from annotated_types import Ge, Le
from dapr.ext.workflow import WorkflowState, WorkflowStatus
from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarmd.api import observability
from swarmd.api.auth import CallerDep, OwnerScopeDep, authenticate
from swarmd.api.deps import (
    PageCursor,
    PageLimit,
    PayloadsDep,
    Services,
    ServicesDep,
    WorkflowClientDep,
    get_wf_client,
    read_run,
)
from swarmd.api.openapi import errors
from swarmd.engine import names
from swarmd.engine.catalog import RunQuery, RunRecord, RunStatus, decode_cursor, final_update
from swarmd.engine.jsontypes import integral
from swarmd.engine.live import LiveProgress
from swarmd.engine.models import Progress, SwarmInput, Usage
from swarmd.engine.spec import NAME as SWARM_NAME
from swarmd.engine.spec import SpecRegistry, parse_spec
from swarmd.errors import (
    RunConflict,
    RunNotFound,
    ValidationFailed,
)
from swarmd.identity.caller import Caller

router = APIRouter(prefix="/v1/runs", tags=["runs"], dependencies=[Depends(authenticate)])

_STATUS: dict[WorkflowStatus, RunStatus] = {
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
        errors = [_err(e) for e in exc.errors()]
        raise ValidationFailed(
            f"{errors[0]['field']}: {errors[0]['message']}", field=errors[0]["field"], errors=errors
        ) from exc
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


def _err(e: Any) -> dict[str, Any]:
    return {"field": ".".join(str(p) for p in ("input", *e["loc"])), "message": e["msg"]}


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
        status=_STATUS[state.runtime_status],
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
            return _existing(existing, wf_name, inp, response)
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
        return _existing(existing, wf_name, inp, response, cause=exc)
    observability.run_started(services.metrics, inp)
    return RunAccepted(run_id=run_id, swarm=inp.spec.name, status="pending", created=True)


def _existing(
    state: WorkflowState,
    wf_name: str,
    inp: SwarmInput,
    response: Response,
    cause: Exception | None = None,
) -> RunAccepted:
    same_input = False
    if state.serialized_input:
        try:
            stored = json.loads(state.serialized_input)
            if isinstance(stored, dict):
                stored.pop("trace", None)  # each start request has its own trace
            same_input = stored == inp.model_dump(mode="json", exclude={"trace"})
        except ValueError:
            same_input = False
    if state.name != wf_name or not same_input:
        raise RunConflict(
            f"run {inp.run_id!r} already exists with a different swarm or input",
            field="run_id",
        ) from cause
    response.status_code = status.HTTP_200_OK
    return RunAccepted(
        run_id=inp.run_id,
        swarm=inp.spec.name,
        status=_STATUS[state.runtime_status],
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
        if st.runtime_status in (
            WorkflowStatus.COMPLETED,
            WorkflowStatus.FAILED,
            WorkflowStatus.TERMINATED,
        ):
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
