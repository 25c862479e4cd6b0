"""The outbox of run events: ``swarm.results`` (one per run end) and ``swarm.events``
(one per agent done), published at least once, deduplicable by run id.

Invariants:

* An event enters the outbox (one state key, ``swarmd-outbox``: event id -> event)
  in the **same state transaction** that records what it reports: a result event
  in the run tracker's end transaction (an :data:`~swarmd.engine.tracker.EndHook`),
  progress events together with the "progress published so far" marker
  (``swarmd-outbox-progress``). So a crash after a run ended but before its event
  was published leaves the event in the outbox, and a recorded end is never
  reported twice into the outbox.
* An event leaves the outbox only **after** daprd accepted it for publishing; a
  crash in between publishes it again (same CloudEvent id, same ``run_id``).
* One replica at a time (a short lock in the lock store) watches progress and
  drains the outbox, so replicas do not publish the same events side by side.

Event ids: ``result-<run_id>``, ``progress-<run_id>-<agents_done>``: consumers
deduplicate by them (they are the CloudEvent ids) or by ``run_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Literal

import grpc
from dapr.ext.workflow import WorkflowState, WorkflowStatus
from pydantic import BaseModel, ValidationError

from swarmd.config import Settings
from swarmd.engine.dapr import DaprClient
from swarmd.engine.models import Progress, Usage
from swarmd.engine.publisher import EVENTS_TOPIC, RESULTS_TOPIC, Publisher
from swarmd.engine.tracker import INDEX_KEY, EndedRuns, Upsert
from swarmd.errors import DependencyUnavailable
from swarmd.metrics import Metrics

log = logging.getLogger("swarmd.engine.outbox")

OUTBOX_KEY = "swarmd-outbox"
PROGRESS_KEY = "swarmd-outbox-progress"
LEADER_LOCK = "swarmd-outbox"
#: events in one bulk publish request
PUBLISH_BATCH = 200
#: results whose output is larger than this carry no output (read it at GET /v1/runs/{id})
MAX_OUTPUT_BYTES = 256_000
_STATUS: dict[WorkflowStatus, Literal["completed", "failed", "terminated"]] = {
    WorkflowStatus.COMPLETED: "completed",
    WorkflowStatus.FAILED: "failed",
    WorkflowStatus.TERMINATED: "terminated",
}


class RunResult(BaseModel):
    """Data of a ``swarm.results`` event (CloudEvent type ``swarmd.run.result``)."""

    run_id: str
    swarm: str | None
    status: Literal["completed", "failed", "terminated"]
    #: why a completed run stopped early ("token_budget", "deadline", "stage_failed")
    stop_reason: str | None = None
    output: dict[str, Any] | None = None
    #: the output was too large for an event: read it at GET /v1/runs/{run_id}
    output_omitted: bool = False
    error: str | None = None
    usage: Usage = Usage()
    user: str | None = None


class RunProgress(BaseModel):
    """Data of a ``swarm.events`` event (CloudEvent type ``swarmd.run.progress``):
    the ``agents_done``-th agent of the run finished."""

    run_id: str
    swarm: str | None
    agents_done: int
    agents_total: int
    phase: str
    usage: Usage = Usage()


def result_event(run_id: str, entry: dict[str, Any], st: WorkflowState, usage: Usage) -> RunResult:
    out: Any = None
    if st.serialized_output:
        with contextlib.suppress(ValueError):
            out = json.loads(st.serialized_output)
    output = out if isinstance(out, dict) else None
    omitted = output is not None and len(st.serialized_output or "") > MAX_OUTPUT_BYTES
    error = None
    if st.runtime_status == WorkflowStatus.FAILED:
        error = st.failure_details.message if st.failure_details else "failed"
    elif st.runtime_status == WorkflowStatus.TERMINATED:
        error = "terminated"
    return RunResult(
        run_id=run_id,
        swarm=entry.get("swarm"),
        status=_STATUS.get(st.runtime_status, "failed"),
        stop_reason=output.get("stop_reason") if output else None,
        output=None if omitted else output,
        output_omitted=omitted,
        error=error,
        usage=usage,
        user=entry.get("user"),
    )


def _progress(st: WorkflowState | None) -> Progress | None:
    if st is None or not st.serialized_custom_status:
        return None
    try:
        return Progress.model_validate_json(st.serialized_custom_status)
    except ValidationError:
        return None


def progress_events(
    run_id: str, swarm: str | None, prog: Progress, since: int
) -> dict[str, dict[str, Any]]:
    """Outbox entries for agents ``since+1 .. prog.agents_done`` of a run."""
    events: dict[str, dict[str, Any]] = {}
    for n in range(since + 1, prog.agents_done + 1):
        data = RunProgress(
            run_id=run_id,
            swarm=swarm,
            agents_done=n,
            agents_total=max(prog.agents_total, prog.agents_done),
            phase=prog.phase,
            usage=prog.usage,
        )
        events[f"progress-{run_id}-{n}"] = _entry(EVENTS_TOPIC, "swarmd.run.progress", data)
    return events


def _entry(topic: str, event_type: str, data: BaseModel) -> dict[str, Any]:
    return {"topic": topic, "type": event_type, "at": time.time(), "data": data.model_dump()}


class Outbox:
    """Writes run events into the outbox and publishes them from there."""

    def __init__(self, settings: Settings, metrics: Metrics, owner: str, state: DaprClient) -> None:
        """``state``: the process's Dapr client (made and closed by the entrypoint)."""
        self.settings = settings
        self.metrics = metrics
        self.owner = owner
        self.state = state
        self.publisher = Publisher(settings.dapr_http_port, settings.pubsub_name)

    # -- into the outbox ----------------------------------------------------------
    async def on_ended(self, ended: EndedRuns) -> list[Upsert]:
        """The run tracker's end hook: each ended run's result event, and progress
        events for its agents finished since the last ones published."""
        pending, etag = await self._get(OUTBOX_KEY)
        seen, seen_etag = await self._get(PROGRESS_KEY)
        events: dict[str, dict[str, Any]] = {}
        for run_id, entry, st, outcome in ended:
            prog = _progress(st)
            if prog is not None:
                since = int(seen.get(run_id, 0))
                events.update(progress_events(run_id, entry.get("swarm"), prog, since))
            data = result_event(run_id, entry, st, outcome["usage"])
            events[f"result-{run_id}"] = _entry(RESULTS_TOPIC, "swarmd.run.result", data)
        done = {run_id for run_id, *_ in ended}
        new_seen = {k: v for k, v in seen.items() if k not in done}
        return [(OUTBOX_KEY, {**pending, **events}, etag), (PROGRESS_KEY, new_seen, seen_etag)]

    async def watch_progress(self, client: Any) -> int:
        """Progress events for the agents of runs in flight that finished since the last
        pass, written to the outbox with the new marker. Returns how many."""
        index, _ = await self._get(INDEX_KEY)
        if not index:
            return 0
        sem = asyncio.Semaphore(16)

        async def read(run_id: str) -> tuple[str, Progress | None]:
            async with sem:
                try:
                    st = await client.get_workflow_state(run_id, fetch_payloads=True)
                except grpc.RpcError:
                    return run_id, None
            if st is None or st.runtime_status not in (
                WorkflowStatus.RUNNING,
                WorkflowStatus.SUSPENDED,
            ):
                return run_id, None  # ended ones are reported by the end hook
            return run_id, _progress(st)

        found = dict(await asyncio.gather(*(read(r) for r in index)))
        for _ in range(10):
            pending, etag = await self._get(OUTBOX_KEY)
            seen, seen_etag = await self._get(PROGRESS_KEY)
            events: dict[str, dict[str, Any]] = {}
            new_seen = {k: v for k, v in seen.items() if k in index}
            for run_id, prog in found.items():
                since = int(seen.get(run_id, 0))
                if prog is None or prog.agents_done <= since:
                    continue
                swarm = (index.get(run_id) or {}).get("swarm")
                events.update(progress_events(run_id, swarm, prog, since))
                new_seen[run_id] = prog.agents_done
            if not events and new_seen == seen:
                return 0
            upserts: list[Upsert] = [(PROGRESS_KEY, new_seen, seen_etag)]
            if events:
                upserts.append((OUTBOX_KEY, {**pending, **events}, etag))
            if await self.state.transact(upserts):
                return len(events)
            await asyncio.sleep(random.uniform(0.005, 0.05))
        return 0

    # -- out of the outbox --------------------------------------------------------
    async def drain(self) -> int:
        """Publish every pending event (oldest first), then take the published ones out.
        Returns how many were published."""
        pending, _ = await self._get(OUTBOX_KEY)
        self.metrics.outbox_pending.set(len(pending))
        if not pending:
            return 0
        order = sorted(pending, key=lambda k: float(pending[k].get("at", 0)))
        by_topic: dict[str, list[str]] = {}
        for event_id in order:
            by_topic.setdefault(pending[event_id]["topic"], []).append(event_id)
        sem = asyncio.Semaphore(4)

        async def send(topic: str, ids: list[str]) -> set[str]:
            batch = [(e, pending[e]["type"], pending[e]["data"]) for e in ids]
            async with sem:
                failed = await self.publisher.publish_many(topic, batch)
            if failed:
                log.warning("outbox: %d event(s) to %s not published yet", len(failed), topic)
            self.metrics.outbox_published.labels(topic).inc(len(ids) - len(failed))
            return set(ids) - failed

        chunks = [
            (topic, ids[i : i + PUBLISH_BATCH])
            for topic, ids in by_topic.items()
            for i in range(0, len(ids), PUBLISH_BATCH)
        ]
        sent: set[str] = set()
        for got in await asyncio.gather(*(send(t, ids) for t, ids in chunks)):
            sent |= got
        for _ in range(50):
            now, etag = await self._get(OUTBOX_KEY)
            left = {k: v for k, v in now.items() if k not in sent}
            if len(left) == len(now) or await self.state.transact([(OUTBOX_KEY, left, etag)]):
                self.metrics.outbox_pending.set(len(left))
                return len(sent)
            await asyncio.sleep(random.uniform(0.005, 0.05))
        return len(sent)  # still listed: published again next pass (at least once)

    # -- the background loop ------------------------------------------------------
    async def run(self, workflow_client: Callable[[], Any | None]) -> None:
        """Every ``tracker_interval_s``: if this replica leads, watch progress and drain.
        ``workflow_client()`` is the workflow client, or None while the worker is not up."""
        interval = self.settings.tracker_interval_s
        while True:
            try:
                if await self._lead(max(1, round(interval))):  # expires by the next pass
                    client = workflow_client()
                    if client is not None:
                        await self.watch_progress(client)
                    await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("outbox: pass failed; will retry", exc_info=True)
            await asyncio.sleep(interval)

    async def _lead(self, expiry_s: int) -> bool:
        try:
            return await self.state.try_lock(
                self.settings.lock_store, LEADER_LOCK, self.owner, expiry_s
            )
        except DependencyUnavailable:
            return False

    async def _get(self, key: str) -> tuple[dict[str, Any], str | None]:
        item = await self.state.get(key)
        return (item.value if isinstance(item.value, dict) else {}), item.etag

    async def close(self) -> None:
        await self.publisher.close()
