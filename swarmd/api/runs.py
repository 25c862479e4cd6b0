"""``/v1/runs``: start a swarm run and read its status."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Literal

import grpc
from dapr.ext.workflow import WorkflowState, WorkflowStatus
from dapr.ext.workflow.aio import DaprWorkflowClient
from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarmd.api.deps import SettingsDep, WorkflowClientDep, get_wf_client, require_token
from swarmd.engine import names
from swarmd.engine.models import Progress, ScatterGatherInput, Usage
from swarmd.errors import (
    DependencyUnavailable,
    RunConflict,
    RunNotFound,
    UnknownSwarm,
    ValidationFailed,
)

router = APIRouter(prefix="/v1/runs", tags=["runs"], dependencies=[Depends(require_token)])

RunStatus = Literal[
    "pending", "running", "completed", "failed", "terminated", "suspended", "unknown"
]
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


class StartRun(BaseModel):
    """Body of ``POST /v1/runs``."""

    model_config = ConfigDict(extra="forbid")
    swarm: str = Field(
        description="Swarm pattern, e.g. 'scatter_gather'", examples=["scatter_gather"]
    )
    input: dict[str, Any] = Field(description="Pattern input, e.g. {'task': '...', 'agents': 5}")
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
    created_at: str | None = None
    updated_at: str | None = None


def build_input(body: StartRun, run_id: str) -> ScatterGatherInput:
    if body.swarm not in names.SWARMS:
        raise UnknownSwarm(
            f"unknown swarm {body.swarm!r}; known: {', '.join(sorted(names.SWARMS))}",
            field="swarm",
        )
    try:
        return ScatterGatherInput.model_validate({**body.input, "run_id": run_id})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in ("input", *first["loc"]))
        raise ValidationFailed(
            f"{loc}: {first['msg']}", field=loc, errors=[_err(e) for e in exc.errors()]
        ) from exc


def _err(e: Any) -> dict[str, Any]:
    return {"field": ".".join(str(p) for p in ("input", *e["loc"])), "message": e["msg"]}


def view(state: WorkflowState) -> RunView:
    swarm = next((k for k, v in names.SWARMS.items() if v == state.name), state.name)
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
        run_id=state.instance_id,
        swarm=swarm,
        status=_STATUS[state.runtime_status],
        progress=progress,
        usage=usage,
        output=out if isinstance(out, dict) else None,
        error=err,
        created_at=state.created_at.isoformat() if state.created_at else None,
        updated_at=state.last_updated_at.isoformat() if state.last_updated_at else None,
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
    responses={200: {"model": RunAccepted, "description": "Run already existed"}},
)
async def start_run(
    body: StartRun, settings: SettingsDep, request: Request, response: Response
) -> RunAccepted:
    """Start a swarm run. Answers 202 with the run id; 200 if ``run_id`` already exists."""
    run_id = body.run_id or uuid.uuid4().hex
    inp = build_input(body, run_id)
    if inp.agents > settings.max_agents:
        raise ValidationFailed(
            f"input.agents: at most {settings.max_agents} agents per run", field="input.agents"
        )
    client = get_wf_client(request)  # after validation: bad input is 4xx even without a sidecar
    wf_name = names.SWARMS[body.swarm]
    if body.run_id:
        existing = await fetch_state(client, run_id)
        if existing is not None:
            return _existing(existing, wf_name, inp, response)
    try:
        await client.schedule_new_workflow(wf_name, input=inp, instance_id=run_id)
    except grpc.RpcError as exc:  # lost a race with an identical concurrent start
        existing = await client.get_workflow_state(run_id)
        if existing is None:
            raise
        return _existing(existing, wf_name, inp, response, cause=exc)
    return RunAccepted(run_id=run_id, swarm=body.swarm, status="pending", created=True)


def _existing(
    state: WorkflowState,
    wf_name: str,
    inp: ScatterGatherInput,
    response: Response,
    cause: Exception | None = None,
) -> RunAccepted:
    same_input = False
    if state.serialized_input:
        try:
            same_input = json.loads(state.serialized_input) == inp.model_dump(mode="json")
        except ValueError:
            same_input = False
    if state.name != wf_name or not same_input:
        raise RunConflict(
            f"run {state.instance_id!r} already exists with a different swarm or input",
            field="run_id",
        ) from cause
    response.status_code = status.HTTP_200_OK
    swarm = next(k for k, v in names.SWARMS.items() if v == wf_name)
    return RunAccepted(
        run_id=state.instance_id, swarm=swarm, status=_STATUS[state.runtime_status], created=False
    )


async def fetch_state(client: DaprWorkflowClient, run_id: str) -> WorkflowState | None:
    """The run's state; retries the sidecar's transient read errors (a read racing a
    write of the same workflow can fail), then answers 503 rather than 500."""
    for attempt in range(4):
        try:
            return await client.get_workflow_state(run_id, fetch_payloads=True)
        except grpc.RpcError as exc:
            last = exc
            await asyncio.sleep(0.05 * 2**attempt)
    raise DependencyUnavailable(f"could not read run {run_id!r} from the sidecar: {last}")


@router.get("/{run_id}", response_model=RunView)
async def get_run(run_id: str, client: WorkflowClientDep) -> RunView:
    """Status, progress, token usage, and the output or error of a run."""
    state = await fetch_state(client, run_id)
    if state is None:
        raise RunNotFound(f"no run with id {run_id!r}", field="run_id")
    return view(state)
