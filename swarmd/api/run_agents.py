"""``/v1/runs/{run_id}/agents`` and ``/answer``: a run's timeline and payloads.

What the run viewer (``/ui``) shows of one run: every agent and every LLM call
the run made itself, with start, end, status, turns, retries, tokens and cost
(read from the workflow history the engine already keeps, see
:mod:`swarmd.engine.history`), and, on demand, one agent's output or the
run's answer, with payloads that travelled by reference resolved. Outputs are
left out of the timeline so that a 1,000-agent run's timeline stays small.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from dapr.ext.workflow import WorkflowState
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field, ValidationError

from swarmd.api.auth import CallerDep, authenticate
from swarmd.api.deps import (
    HistoryDep,
    PayloadsDep,
    ServicesDep,
    WorkflowClientDep,
    read_run,
)
from swarmd.api.runs import STATUS, RunId, error_responses, visible
from swarmd.engine.catalog import RunStatus
from swarmd.engine.history import TimelineEntry
from swarmd.engine.models import Progress, Usage
from swarmd.engine.payloads import PayloadStore
from swarmd.errors import RunEntryNotFound, RunNotFound
from swarmd.identity.caller import Caller

router = APIRouter(prefix="/v1/runs", tags=["run viewer"], dependencies=[Depends(authenticate)])

MaxChars = Annotated[
    int | None,
    Query(ge=1, le=100_000_000, description="cut the text to this many characters"),
]


class RunTimeline(BaseModel):
    run_id: str
    status: RunStatus
    created_at: datetime | None = None
    updated_at: datetime | None = None
    agents_total: int = Field(0, description="agents the run will start (its progress)")
    queued: int = Field(0, description="agents not started yet (waiting for max_parallel)")
    entries: list[TimelineEntry] = Field(description="agents and steps, in start order")
    usage: Usage = Field(description="the entries' usage added up")


class EntryOutput(BaseModel):
    run_id: str
    id: str
    name: str
    kind: str
    status: str
    content: str = Field(description="the answer (the first max_chars characters)")
    content_chars: int = Field(description="the full answer's length")
    truncated: bool
    error: str | None = None


class RunAnswer(BaseModel):
    run_id: str
    status: RunStatus
    answer: str | None = Field(description="null until the run has an output")
    answer_chars: int = 0
    truncated: bool = False
    stop_reason: str | None = None
    error: str | None = None


async def _state(services: ServicesDep, client: Any, run_id: str, caller: Caller) -> WorkflowState:
    """The run's current workflow (a revived run's latest generation: its history is
    the one to read, under ``state.instance_id``); 404 if there is none or it is
    another user's."""
    state = visible(caller, await read_run(services, client, run_id))
    if state is None:
        raise RunNotFound(f"no run with id {run_id!r}", field="run_id")
    return state


def _cut(text: str, max_chars: int | None) -> tuple[str, bool]:
    if max_chars is None or len(text) <= max_chars:
        return text, False
    return text[:max_chars], True


async def _resolved(payloads: PayloadStore, text: str) -> str:
    if "[[swarmd-ref:" not in text:
        return text
    return await payloads.resolve(text)


@router.get(
    "/{run_id}/agents",
    response_model=RunTimeline,
    summary="A run's timeline: its agents and steps",
    responses=error_responses(401, 404, 422, 503),
)
async def run_timeline(
    run_id: RunId,
    client: WorkflowClientDep,
    history: HistoryDep,
    services: ServicesDep,
    caller: CallerDep,
) -> RunTimeline:
    """Every agent (start, end, status, turns, retries, tokens, cost) and every LLM
    call the run made itself (planner, reducer, ...), in start order. Outputs are not
    included: ``GET /v1/runs/{run_id}/agents/{id}`` fetches one."""
    state = await _state(services, client, run_id, caller)
    entries, _ = await history.timeline(state.instance_id)
    total = 0
    if state.serialized_custom_status:
        try:
            total = Progress.model_validate_json(state.serialized_custom_status).agents_total
        except ValidationError:
            total = 0
    started = sum(1 for e in entries if e.kind == "agent")
    usage = Usage()
    for e in entries:
        usage = usage.add(e.usage)
    return RunTimeline(
        run_id=run_id,
        status=STATUS[state.runtime_status],
        created_at=_aware(state.created_at),
        updated_at=_aware(state.last_updated_at),
        agents_total=max(total, started),
        queued=max(0, total - started) if state.runtime_status.name == "RUNNING" else 0,
        entries=entries,
        usage=usage,
    )


@router.get(
    "/{run_id}/agents/{entry_id}",
    response_model=EntryOutput,
    summary="One agent's or step's output",
    responses=error_responses(401, 404, 422, 503),
)
async def entry_output(
    run_id: RunId,
    entry_id: Annotated[str, Path(max_length=300, description="an entry's id in the timeline")],
    client: WorkflowClientDep,
    history: HistoryDep,
    payloads: PayloadsDep,
    services: ServicesDep,
    caller: CallerDep,
    max_chars: MaxChars = None,
) -> EntryOutput:
    """The answer of one timeline entry, with a payload kept by reference fetched
    from the state store. 404 if the run or the entry does not exist."""
    state = await _state(services, client, run_id, caller)
    entries, outputs = await history.timeline(state.instance_id)
    entry = next((e for e in entries if e.id == entry_id), None)
    if entry is None:
        raise RunEntryNotFound(
            f"run {run_id!r} has no agent or step {entry_id!r}", field="entry_id"
        )
    raw = outputs.get(entry_id) or {}
    content = raw.get("content") or ""
    if not content and isinstance(raw.get("partials"), list):
        content = "\n\n".join(str(p) for p in raw["partials"])
    text = await _resolved(payloads, str(content))
    cut, truncated = _cut(text, max_chars)
    return EntryOutput(
        run_id=run_id,
        id=entry.id,
        name=entry.name,
        kind=entry.kind,
        status=entry.status,
        content=cut,
        content_chars=len(text),
        truncated=truncated,
        error=entry.error,
    )


@router.get(
    "/{run_id}/answer",
    response_model=RunAnswer,
    summary="A run's answer",
    responses=error_responses(401, 404, 422, 503),
)
async def run_answer(
    run_id: RunId,
    client: WorkflowClientDep,
    payloads: PayloadsDep,
    services: ServicesDep,
    caller: CallerDep,
    max_chars: MaxChars = None,
) -> RunAnswer:
    """The run's final answer alone (without its agents' outputs), resolved."""
    state = await _state(services, client, run_id, caller)
    out: Any = None
    if state.serialized_output:
        try:
            out = json.loads(state.serialized_output)
        except ValueError:
            out = None
    answer = out.get("answer") if isinstance(out, dict) else None
    text = await _resolved(payloads, answer) if isinstance(answer, str) else None
    cut, truncated = _cut(text, max_chars) if text is not None else (None, False)
    return RunAnswer(
        run_id=run_id,
        status=STATUS[state.runtime_status],
        answer=cut,
        answer_chars=len(text or ""),
        truncated=truncated,
        stop_reason=out.get("stop_reason") if isinstance(out, dict) else None,
        error=state.failure_details.message if state.failure_details else None,
    )


def _aware(t: datetime | None) -> datetime | None:
    """The sidecar's times are UTC without an offset; say so (RFC 3339 needs one)."""
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t
