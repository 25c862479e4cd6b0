"""The run tracker: which runs are in flight, and what happens when one ends.

A durable index of the runs in flight (one state-store key) is what makes the
run metrics and the per-user usage survive restarts:

* the API adds a run to the index **before** it schedules the workflow;
* every replica reads the index each ``tracker_interval_s`` and sets
  ``swarmd_runs_in_flight`` from it (the cluster-wide count: a restarted
  process reports the right number at once);
* one replica at a time (a short lock in the lock store) asks the sidecar for
  each indexed run's status; for the runs that ended it, in **one state
  transaction** guarded by ETags, removes them from the index and adds their
  usage to each user's record. Only the replica whose transaction succeeded
  counts the end (completed / failed / terminated, budget stops) and records
  the run's span, so an end is counted once even with many replicas, and a
  crash between the two leaves the run in the index to be seen again.
* ``end_hooks`` add their own writes to that transaction (the pub/sub outbox puts
  each run's result event there), so they happen exactly when the end is recorded.

Per-user usage is the run's final usage (every LLM call's tokens and cost, as
the workflow accumulated them), recorded when the run ends; runs that fail or
are terminated count what they had used by then (their last published
progress). Read it at ``GET /v1/usage/users/{user}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from dapr.ext.workflow import WorkflowState, WorkflowStatus
from opentelemetry.trace import Tracer
from pydantic import BaseModel, ConfigDict, ValidationError

from swarmd import telemetry
from swarmd.config import Settings
from swarmd.engine.dapr import DaprClient
from swarmd.engine.models import Progress, Usage
from swarmd.engine.status import ENDED
from swarmd.errors import DependencyUnavailable, TooManyRequests
from swarmd.metrics import Metrics

log = logging.getLogger("swarmd.engine.tracker")

INDEX_KEY = "swarmd-runs-in-flight"
LEADER_LOCK = "swarmd-run-tracker"
#: an indexed run the sidecar does not know after this long was never started
ORPHAN_AFTER_S = 120.0
#: a run the supervisor is restarting (index entry ``reviving``) is not ended for this long
REVIVING_S = 120.0

#: one write of an end transaction: (key, value, ETag; None = the key must not exist yet)
Upsert = tuple[str, Any, str | None]
#: runs that ended, as ``(run_id, index entry, final state, outcome)``; outcome holds
#: ``usage`` (a :class:`Usage`) and ``stop_reason``
EndedRuns = list[tuple[str, dict[str, Any], WorkflowState, dict[str, Any]]]
#: extra writes for the end transaction of ``EndedRuns`` (e.g. an outbox's events):
#: they commit together with the runs leaving the index, or not at all
EndHook = Callable[[EndedRuns], Awaitable[list[Upsert]]]


class UserUsage(BaseModel):
    """What one end user's runs have used (runs that ended)."""

    model_config = ConfigDict(extra="ignore")
    user: str
    runs: int = 0
    usage: Usage = Usage()
    last_run_id: str | None = None
    updated_at: str | None = None


def _usage_record(user: str, raw: Any) -> UserUsage:
    """A user's stored usage record, or an empty one (none yet, or unreadable)."""
    if isinstance(raw, dict):
        with contextlib.suppress(ValidationError):
            return UserUsage.model_validate(raw)
    return UserUsage(user=user)


def instance_id(run_id: str, generation: Any = None) -> str:
    """The workflow instance of a run's generation: the run id itself for the first,
    ``<run>:g<n>`` once the run supervisor restarted it (``:`` is not allowed in run
    ids, so no run id collides with a generation)."""
    gen = int(generation or 1)
    return run_id if gen <= 1 else f"{run_id}:g{gen}"


def user_key(user: str) -> str:
    return "swarmd-usage-user-" + hashlib.sha256(user.encode()).hexdigest()[:40]


class RunTracker:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        tracer: Callable[[], Tracer],
        owner: str,
        dapr: DaprClient,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracer = tracer
        self.owner = owner
        self.state = dapr
        self._lock: asyncio.Lock | None = None
        self._swarms: set[str] = set()
        #: runs in flight cluster-wide, as of this replica's last read or write of the index
        self.in_flight = 0
        #: called for each batch of ended runs inside its end transaction (see EndHook)
        self.end_hooks: list[EndHook] = []
        #: called with the ids of runs recorded as ended (the supervisor drops their inputs)
        self.on_ended: list[Callable[[list[str]], Any]] = []

    def _mutex(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _get(self, key: str) -> tuple[Any, str | None]:
        item = await self.state.get(key)
        return item.value, item.etag

    async def _lead(self, expiry_s: int) -> bool:
        """True if this replica may record ended runs now (or there is no lock store)."""
        try:
            return await self.state.try_lock(
                self.settings.lock_store, LEADER_LOCK, self.owner, expiry_s
            )
        except DependencyUnavailable:
            return True

    # -- the API's side ----------------------------------------------------------
    async def started(
        self, run_id: str, entry: dict[str, Any], max_per_user: int | None = None
    ) -> None:
        """Put a run in the index (before its workflow is scheduled). With
        ``max_per_user``, refuse (429) if ``entry["user"]`` already has that many runs
        in the index: checked in the same ETag-guarded write, so concurrent starts on
        any replica cannot overshoot."""
        entry = {**entry, "t": time.time()}
        user = entry.get("user")

        def add(index: dict[str, Any]) -> dict[str, Any] | None:
            if run_id in index:
                return None
            if max_per_user is not None and user is not None:
                mine = sum(1 for e in index.values() if (e or {}).get("user") == user)
                if mine >= max_per_user:
                    raise TooManyRequests.in_flight(
                        "runs", str(user), max_per_user, self.settings.user_busy_retry_after_s
                    )
            return {**index, run_id: entry}

        await self._update_index(add)

    async def annotate(self, run_id: str, fields: dict[str, Any]) -> None:
        """Set (None: remove) fields of a run's index entry, if it is still indexed
        (the run supervisor's ``reviving``, ``revived_at`` and ``generation``)."""

        def change(index: dict[str, Any]) -> dict[str, Any] | None:
            if run_id not in index:
                return None
            entry = {**index[run_id], **fields}
            return {**index, run_id: {k: v for k, v in entry.items() if v is not None}}

        await self._update_index(change)

    async def forget(self, run_id: str) -> None:
        """Take a run out of the index without counting it (its start failed)."""

        def drop(index: dict[str, Any]) -> dict[str, Any] | None:
            if run_id not in index:
                return None
            return {k: v for k, v in index.items() if k != run_id}

        await self._update_index(drop)

    async def _update_index(
        self, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> None:
        seen: dict[str, Any] = {}

        def apply(value: Any) -> dict[str, Any] | None:
            nonlocal seen
            seen = value if isinstance(value, dict) else {}
            return change(seen)

        async with self._mutex():
            new = await self.state.update(INDEX_KEY, apply, what="the run index")
        self._gauge(seen if new is None else new)

    async def user_usage(self, user: str) -> UserUsage:
        value, _ = await self._get(user_key(user))
        return _usage_record(user, value)

    # -- the background side -------------------------------------------------------
    async def run(self, workflow_client: Callable[[], Any | None]) -> None:
        """Reconcile every ``tracker_interval_s`` for as long as the app runs.
        ``workflow_client()`` is the workflow client, or None while the worker is not up."""
        while True:
            client = workflow_client()
            try:
                if client is not None:
                    await self.reconcile(client)
                else:
                    value, _ = await self._get(INDEX_KEY)
                    self._gauge(value if isinstance(value, dict) else {})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("run tracker: reconcile failed; will retry", exc_info=True)
            await asyncio.sleep(self.settings.tracker_interval_s)

    async def reconcile(self, client: Any) -> int:
        """One pass; returns how many ended runs it recorded."""
        value, _ = await self._get(INDEX_KEY)
        index: dict[str, Any] = value if isinstance(value, dict) else {}
        self._gauge(index)
        if not index:
            return 0
        expiry = max(1, round(self.settings.tracker_interval_s))
        if not await self._lead(expiry):
            return 0
        sem = asyncio.Semaphore(16)

        async def check(run_id: str, entry: dict[str, Any]) -> tuple[str, Any] | None:
            if time.time() - float(entry.get("reviving") or 0) < REVIVING_S:
                return None  # being restarted as a fresh generation: its end is not the run's
            wf = instance_id(run_id, entry.get("generation"))  # restarted by the supervisor?
            try:
                async with sem:
                    st = await client.get_workflow_state(wf, fetch_payloads=False)
                    if st is None:
                        age = time.time() - float(entry.get("t", 0))
                        return (run_id, None) if age > ORPHAN_AFTER_S else None
                    if st.runtime_status not in ENDED:
                        return None
                    return run_id, await client.get_workflow_state(wf, fetch_payloads=True)
            except grpc.RpcError:
                return None

        found = await asyncio.gather(*(check(k, v) for k, v in index.items()))
        ended = {run_id: st for run_id, st in (f for f in found if f is not None)}
        if not ended:
            return 0
        return await self._record(ended)

    async def settle(self, run_id: str, state: WorkflowState) -> None:
        """Count the end of finished run ``run_id`` now, if it is still indexed: purging
        a run deletes the state the tracker reads, and a purged run it had not counted
        yet would stay "in flight" until it is taken for an orphan (ORPHAN_AFTER_S)."""
        for _ in range(10):
            value, _etag = await self._get(INDEX_KEY)
            if not isinstance(value, dict) or run_id not in value:
                return
            if await self._record({run_id: state}):
                return
            await asyncio.sleep(random.uniform(0.01, 0.05))  # the index moved: again
        raise DependencyUnavailable(f"could not record the end of run {run_id!r}")

    async def _record(self, ended: dict[str, WorkflowState | None]) -> int:
        async with self._mutex():
            value, etag = await self._get(INDEX_KEY)
            index: dict[str, Any] = value if isinstance(value, dict) else {}
            ended = {k: v for k, v in ended.items() if k in index}
            if not ended:
                return 0
            outcomes = {run_id: _outcome(st) for run_id, st in ended.items()}
            users: dict[str, tuple[UserUsage, str | None]] = {}
            now = datetime.now(UTC).isoformat()
            for run_id in ended:
                user = index[run_id].get("user")
                if not user or outcomes[run_id] is None:
                    continue
                if user not in users:
                    raw, uetag = await self._get(user_key(user))
                    users[user] = (_usage_record(user, raw), uetag)
                rec, uetag = users[user]
                usage = outcomes[run_id]["usage"]  # type: ignore[index]
                users[user] = (
                    rec.model_copy(
                        update={
                            "runs": rec.runs + 1,
                            "usage": rec.usage.add(usage),
                            "last_run_id": run_id,
                            "updated_at": now,
                        }
                    ),
                    uetag,
                )
            new_index = {k: v for k, v in index.items() if k not in ended}
            upserts: list[tuple[str, Any, str | None]] = [(INDEX_KEY, new_index, etag)]
            for user, (rec, uetag) in users.items():
                upserts.append((user_key(user), rec.model_dump(mode="json"), uetag))
            batch: EndedRuns = [
                (run_id, index[run_id], st, out)
                for run_id, st in ended.items()
                if st is not None and (out := outcomes[run_id]) is not None
            ]
            for hook in self.end_hooks if batch else []:
                upserts.extend(await hook(batch))
            if not await self.state.transact(upserts):
                return 0  # another replica recorded them, or the index moved: next pass
            self._gauge(new_index)
        for run_id, st in ended.items():
            self._count(run_id, index[run_id], st, outcomes[run_id])
        for ended_hook in self.on_ended:
            with contextlib.suppress(Exception):
                await ended_hook(list(ended))
        return len(ended)

    def _count(
        self,
        run_id: str,
        entry: dict[str, Any],
        st: WorkflowState | None,
        outcome: dict[str, Any] | None,
    ) -> None:
        swarm = str(entry.get("swarm") or "unknown")
        if st is None or outcome is None:
            return  # never started: not counted
        status = st.runtime_status
        if status == WorkflowStatus.COMPLETED:
            self.metrics.runs_completed.labels(swarm).inc()
        elif status == WorkflowStatus.FAILED:
            self.metrics.runs_failed.labels(swarm).inc()
        else:
            self.metrics.runs_terminated.labels(swarm).inc()
        stop = outcome.get("stop_reason")
        if stop:
            self.metrics.budget_stops.labels(swarm, str(stop)).inc()
        log.info(
            "run ended: %s",
            status.name.lower(),
            extra={"run_id": run_id, "swarm": swarm, "stop_reason": stop},
        )
        try:
            self._run_span(run_id, entry, st, outcome)
        except Exception:
            log.debug("run span not recorded", exc_info=True)

    def _run_span(
        self, run_id: str, entry: dict[str, Any], st: WorkflowState, outcome: dict[str, Any]
    ) -> None:
        run_ctx = telemetry.parse_traceparent(entry.get("trace"))
        if run_ctx is None:
            return
        usage: Usage = outcome["usage"]
        status = st.runtime_status.name.lower()
        error = None
        if st.runtime_status == WorkflowStatus.FAILED:
            error = st.failure_details.message if st.failure_details else "failed"
        elif st.runtime_status == WorkflowStatus.TERMINATED:
            error = "terminated"
        start = st.created_at or datetime.fromtimestamp(float(entry.get("t", 0)), UTC)
        end = st.last_updated_at or datetime.now(UTC)
        telemetry.emit_span(
            self.tracer(),
            f"swarmd.run {entry.get('swarm')}",
            span_id=run_ctx.span_id,
            trace_id=run_ctx.trace_id,
            parent=telemetry.parse_traceparent(entry.get("parent")),
            start=start,
            end=end,
            attributes={
                "swarmd.run_id": run_id,
                "swarmd.swarm": entry.get("swarm"),
                "swarmd.run.status": status,
                "swarmd.stop_reason": outcome.get("stop_reason"),
                "enduser.id": entry.get("user"),
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "swarmd.llm.calls": usage.calls,
                "swarmd.llm.cost_usd": usage.cost_usd,
            },
            error=error,
        )

    def _gauge(self, index: dict[str, Any]) -> None:
        self.in_flight = len(index)
        counts: dict[str, int] = {}
        for entry in index.values():
            swarm = str((entry or {}).get("swarm") or "unknown")
            counts[swarm] = counts.get(swarm, 0) + 1
        for swarm in self._swarms | set(counts):
            self.metrics.runs_in_flight.labels(swarm).set(counts.get(swarm, 0))
        self._swarms |= set(counts)


def _outcome(st: WorkflowState | None) -> dict[str, Any] | None:
    """Usage and stop reason of an ended run (None: the run never existed)."""
    if st is None:
        return None
    usage = Usage()
    stop = None
    out: Any = None
    if st.serialized_output:
        with contextlib.suppress(ValueError):
            out = json.loads(st.serialized_output)
    if isinstance(out, dict) and isinstance(out.get("usage"), dict):
        with contextlib.suppress(ValidationError):
            usage = Usage.model_validate(out["usage"])
        stop = out.get("stop_reason")
    elif st.serialized_custom_status:
        with contextlib.suppress(ValidationError, ValueError):
            usage = Progress.model_validate_json(st.serialized_custom_status).usage
    return {"usage": usage, "stop_reason": stop}
