"""What a run's workflow history says about its agents: the run viewer's timeline.

The engine already records everything the timeline needs, so nothing is added to
workflow code (and nothing changes for runs in flight):

* the run's own history holds, per agent, a ``childWorkflowInstanceCreated``
  event (when it started, its :class:`AgentInput`) and a
  ``childWorkflowInstanceCompleted`` / ``Failed`` event answering it (when it
  ended, its :class:`AgentOutput`), plus a ``taskScheduled`` / ``taskCompleted``
  pair per LLM call the run made itself (planner, reducer, judge...);
* an agent's own history holds a ``taskFailed`` event per failed attempt of an
  LLM or tool call; the engine retries (:func:`swarmd.engine.retry.call_activity`)
  every failed attempt except an agent's last.

Both are read with the sidecar's ``GetInstanceHistory`` (durabletask's
TaskHubSidecarService; the Python SDK has the stub but no client method), which
reads the state store and never runs the workflow. Finished agents' retry counts
never change, so they are cached by ``(instance id, start time)``: a purged and
restarted run with the same id starts new agents at new times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import grpc
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2 as pb
from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2_grpc as stubs
from pydantic import BaseModel, Field, ValidationError

from swarmd.engine import names
from swarmd.engine.models import AgentOutput, LLMResult, Usage
from swarmd.errors import DependencyUnavailable, RunNotFound

AgentStatus = Literal["running", "answered", "max_turns", "failed", "blocked", "not_started"]
#: histories are read whole; a run's stays below the sidecar's 4 MiB per message
#: write limit per turn, but many turns add up
MAX_HISTORY_BYTES = 256 * 1024 * 1024
#: finished agents whose retry count is remembered (per process)
RETRY_CACHE_SIZE = 50_000
#: agents' histories read at once when counting retries
CONCURRENCY = 16


class TimelineEntry(BaseModel):
    """One agent (a child workflow) or one LLM call of the run itself (a step)."""

    id: str = Field(
        description="unique in the run: an agent's child workflow key (e.g. agent-3, "
        "r1-critic) or a step's name, numbered when it repeats (supervisor#2)"
    )
    name: str = Field(description="the agent's or step's label (not unique in a debate)")
    kind: Literal["agent", "step"] = Field(
        description="agent: a durable agent loop; step: an LLM call the run made itself"
    )
    instance_id: str | None = Field(None, description="the agent's child workflow id")
    status: AgentStatus
    started_at: datetime
    ended_at: datetime | None = None
    turns: int = 0
    retries: int = Field(0, description="failed attempts the engine retried")
    usage: Usage = Field(default_factory=Usage)
    output_chars: int = Field(0, description="length of its answer (GET .../agents/{id})")
    error: str | None = None


def _ts(event: Any) -> datetime:
    dt: datetime = event.timestamp.ToDatetime(tzinfo=UTC)
    return dt


def _json(value: Any) -> Any:
    """A StringValue's JSON, or None."""
    if value is None or not value.value:
        return None
    with contextlib.suppress(ValueError):
        return json.loads(value.value)
    return None


def timeline(instance: str, events: Iterable[Any]) -> tuple[list[TimelineEntry], dict[str, Any]]:
    """The run's agents and steps, in start order, from the history events of its
    workflow ``instance``; and each finished entry's raw output (:class:`AgentOutput`
    or :class:`LLMResult`) by id. Agent ids are their child workflow ids less the
    ``<instance>.`` prefix (a revived run's generation ``<run>:g2`` included)."""
    by_event: dict[int, TimelineEntry] = {}
    entries: list[TimelineEntry] = []
    last_step: dict[str, TimelineEntry] = {}
    outputs: dict[str, Any] = {}
    prefix = f"{instance}."
    groups: dict[int, list[TimelineEntry]] = {}
    agents: dict[str, TimelineEntry] = {}
    for e in events:
        kind = e.WhichOneof("eventType")
        if kind == "taskScheduled" and e.taskScheduled.name == names.RUN_AGENTS:
            # engine v2: a group of agents in one activity; each agent is an entry that
            # starts and ends with its group (the history knows no finer times)
            inp = _json(e.taskScheduled.input) or {}
            members = []
            for job in inp.get("jobs") or []:
                key = str(job.get("key") or job.get("agent"))
                prev = agents.get(key)
                if prev is not None and prev.status == "failed":
                    prev.retries += 1  # the engine ran the failed group again
                    prev.status, prev.ended_at, prev.error = "running", None, None
                    members.append(prev)
                    continue
                entry = TimelineEntry(
                    id=key,
                    name=str(job.get("agent") or key),
                    kind="agent",
                    status="running",
                    started_at=_ts(e),
                )
                agents[key] = entry
                entries.append(entry)
                members.append(entry)
            groups[e.eventId] = members
        elif kind == "taskCompleted" and e.taskCompleted.taskScheduledId in groups:
            members = groups[e.taskCompleted.taskScheduledId]
            raw = _json(e.taskCompleted.result) or {}
            by_label = {str(o.get("agent")): o for o in raw.get("outputs") or []}
            for m in members:
                m.ended_at = _ts(e)
                out_raw = by_label.get(m.name)
                if out_raw is None:
                    m.status, m.error = "not_started", raw.get("stopped")
                    continue
                with contextlib.suppress(ValidationError):
                    out = AgentOutput.model_validate(out_raw)
                    m.status, m.turns, m.usage = out.status, out.turns, out.usage
                    m.output_chars, m.error = out.size, out.error
                    outputs[m.id] = out_raw
        elif kind == "taskFailed" and e.taskFailed.taskScheduledId in groups:
            for m in groups[e.taskFailed.taskScheduledId]:
                m.ended_at, m.status = _ts(e), "failed"
                m.error = e.taskFailed.failureDetails.errorMessage or None
        elif kind == "childWorkflowInstanceCreated":
            c = e.childWorkflowInstanceCreated
            if c.name != names.AGENT_LOOP:
                continue
            inp = _json(c.input) or {}
            key = c.instanceId.removeprefix(prefix)
            entry = TimelineEntry(
                id=key,
                name=str(inp.get("agent") or key),
                kind="agent",
                instance_id=c.instanceId,
                status="running",
                started_at=_ts(e),
            )
            by_event[e.eventId] = entry
            entries.append(entry)
        elif kind == "taskScheduled":
            t = e.taskScheduled
            if t.name not in (names.CALL_LLM, names.REDUCE_CHUNKS):
                continue
            inp = _json(t.input) or {}
            label = str(inp.get("step") or inp.get("agent") or t.name)
            prev = last_step.get(label)
            if prev is not None and prev.status == "failed":
                # the engine's retry of a failed call: the same step, one more retry
                prev.retries += 1
                prev.status, prev.ended_at, prev.error = "running", None, None
                by_event[e.eventId] = prev
                continue
            n = sum(1 for x in entries if x.kind == "step" and x.name == label)
            entry = TimelineEntry(
                id=label if n == 0 else f"{label}#{n + 1}",
                name=label,
                kind="step",
                status="running",
                started_at=_ts(e),
            )
            last_step[label] = by_event[e.eventId] = entry
            entries.append(entry)
        elif kind == "childWorkflowInstanceCompleted":
            done = e.childWorkflowInstanceCompleted
            found = by_event.get(done.taskScheduledId)
            if found is None:
                continue
            raw = _json(done.result)
            found.ended_at = _ts(e)
            found.status = "answered"
            with contextlib.suppress(ValidationError):
                out = AgentOutput.model_validate(raw)
                found.status, found.turns, found.usage = out.status, out.turns, out.usage
                found.output_chars, found.error = out.size, out.error
                outputs[found.id] = raw
        elif kind == "taskCompleted":
            found = by_event.get(e.taskCompleted.taskScheduledId)
            if found is None:
                continue
            found.ended_at = _ts(e)
            found.status = "answered"
            raw = _json(e.taskCompleted.result)
            with contextlib.suppress(ValidationError):
                res = LLMResult.model_validate(raw)
                found.usage, found.turns = res.usage, 1
                found.output_chars = res.content_chars or len(res.content or "")
                outputs[found.id] = raw
            if isinstance(raw, dict) and "partials" in raw:  # reduce_chunks' progress
                with contextlib.suppress(ValidationError):
                    found.usage = Usage.model_validate(raw.get("usage") or {})
                    found.turns = len(raw["partials"])
        elif kind in ("childWorkflowInstanceFailed", "taskFailed"):
            body = getattr(e, kind)
            found = by_event.get(body.taskScheduledId)
            if found is None:
                continue
            found.ended_at = _ts(e)
            found.status = "failed"
            found.error = body.failureDetails.errorMessage or None
    return entries, outputs


def failed_attempts(events: Iterable[Any]) -> int:
    """Activity attempts that failed in an agent's own history."""
    return sum(1 for e in events if e.WhichOneof("eventType") == "taskFailed")


def retries_of(entry: TimelineEntry, failed: int) -> int:
    """Failed attempts the engine retried: all of them, except the one that ended a
    failed agent (the engine gave up on it, or it was not retryable)."""
    return max(0, failed - (1 if entry.status == "failed" else 0))


class HistoryReader:
    """Reads workflow histories from one daprd over gRPC (its API token when set).

    The channel is made on first use, on the event loop of the caller (the API's)."""

    def __init__(self, grpc_port: int, api_token: str | None = None) -> None:
        self.address = f"127.0.0.1:{grpc_port}"
        self.metadata = (("dapr-api-token", api_token),) if api_token else None
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._retries: OrderedDict[tuple[str, datetime], int] = OrderedDict()

    def _get_stub(self) -> Any:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(
                self.address,
                options=[("grpc.max_receive_message_length", MAX_HISTORY_BYTES)],
            )
            self._stub = stubs.TaskHubSidecarServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def events(self, instance_id: str) -> list[Any]:
        """The instance's history events; :class:`RunNotFound` if it has none."""
        req = pb.GetInstanceHistoryRequest(instanceId=instance_id)
        for attempt in range(4):
            try:
                res = await self._get_stub().GetInstanceHistory(
                    req, metadata=self.metadata, timeout=30
                )
                return list(res.events)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND or "not found" in (exc.details() or ""):
                    raise RunNotFound(f"no run with id {instance_id!r}", field="run_id") from exc
                if attempt == 3:
                    raise DependencyUnavailable(
                        f"could not read the history of {instance_id!r}: {exc.details()}"
                    ) from exc
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    async def timeline(self, instance: str) -> tuple[list[TimelineEntry], dict[str, Any]]:
        """The timeline of the run workflow ``instance`` with each agent's retries
        (see the module docstring)."""
        entries, outputs = timeline(instance, await self.events(instance))
        sem = asyncio.Semaphore(CONCURRENCY)

        async def count(entry: TimelineEntry) -> None:
            if entry.instance_id is None:
                return
            key = (entry.instance_id, entry.started_at)
            if key in self._retries:
                entry.retries = self._retries[key]
                return
            async with sem:
                try:
                    failed = failed_attempts(await self.events(entry.instance_id))
                except RunNotFound:
                    failed = 0  # created, not yet started by the sidecar
            entry.retries = retries_of(entry, failed)
            if entry.status != "running":
                self._retries[key] = entry.retries
                while len(self._retries) > RETRY_CACHE_SIZE:
                    self._retries.popitem(last=False)

        await asyncio.gather(*(count(e) for e in entries if e.kind == "agent"))
        return entries, outputs

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None
