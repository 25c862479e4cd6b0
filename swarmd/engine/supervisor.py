"""The run supervisor: finds runs that stopped moving and revives them.

Dapr workflows can wedge after crashes (dapr/dapr#10337, #9743, #7751): a parent
whose daprd died while it created its children logs "execution failed with a
recoverable error and will be retried later", and nothing retries it. The
supervisor defends against that class of failure without knowing its cause.

**Who runs it.** Every app replica runs the loop; one at a time acts, the one
holding the short ``swarmd-run-supervisor`` lock in the lock store for the
pass (no lock store reachable: nobody acts). Each revival is also *claimed*
in the state store by an ETag compare-and-set on the run's revival record, so
two supervisors (a lock store restart, a clock jump) never revive one run twice.

**What is stuck.** The runs come from the durable run index
(:mod:`swarmd.engine.tracker`). A run's *progress clock* is the latest of: its
start, its workflow's last history update (``last_updated_at``), the last
activity call any replica started or finished for it (pulses,
:mod:`swarmd.engine.pulse`), and its last revival. A run is stuck when the
clock is older than ``stall_after_s`` and none of these holds:

* it is paused (``suspended``), or waiting for approval (phase
  ``awaiting_approval``): it waits for a person, not for the engine;
* a call of it is in flight on a live replica, started less than
  ``inflight_grace_s`` ago (a slow model is not a wedge);
* it has ended.

**What it does.** The k-th revival in a row of a run that did not move since
the previous one takes ``revive_actions[k]`` (the last entry repeats; default:
``fresh_generation``, which falls back to ``nudge`` when it is not allowed):

``nudge``
    raise a ``swarmd.nudge`` event on the run's workflow: a new event makes
    the sidecar load the workflow actor and run the orchestration again, which
    re-sends whatever actions a lost execution had not committed. No workflow
    waits for this event; its only effect is the extra execution.
``fresh_generation``
    terminate and purge the run's workflows (recursively) and schedule the
    run again **under the same run id** with its stored start input. With the
    call journal (``swarmd.engine.journal``, engine v2) every finished LLM and
    tool call is answered from the journal, so it pays for none; without it
    this repeats finished calls, so ``fresh_generation: auto`` (default) only
    takes it when the journal is there.

Every revival is recorded (``swarmd-revival.<run>``: run id, why, action,
how long it was stuck, generation, outcome) and listed at ``GET /v1/revivals``
and in ``swarmd_revivals_total`` / ``swarmd_revival_stuck_seconds``. The run
keeps its run id for the user; its index entry carries its ``generation``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dapr.ext.workflow import WorkflowState, WorkflowStatus
from pydantic import BaseModel, Field, ValidationError

from swarmd.config import ReviveAction, Settings
from swarmd.engine import names
from swarmd.engine.dapr import DaprClient
from swarmd.engine.pulse import merge, pulse_key
from swarmd.engine.registry import read_index
from swarmd.engine.tracker import INDEX_KEY, RunTracker, instance_id
from swarmd.errors import DependencyUnavailable
from swarmd.metrics import Metrics

log = logging.getLogger("swarmd.engine.supervisor")

LEADER_LOCK = "swarmd-run-supervisor"
RECENT_KEY = "swarmd-revivals"
NUDGE_EVENT = names.NUDGE
#: revival records of the cluster kept in the recent list
RECENT_MAX = 500
#: how long a revival record is kept after its last revival
RECORD_TTL_S = 7 * 24 * 3600
ENDED = {WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.TERMINATED}
WAITING_PHASES = frozenset({"awaiting_approval"})

Action = ReviveAction


def input_key(run_id: str) -> str:
    return f"swarmd-run-input.{run_id}"


def record_key(run_id: str) -> str:
    return f"swarmd-revival.{run_id}"


class StartInput(BaseModel):
    """What a run was started with, stored before it is scheduled (for a fresh generation)."""

    workflow: str
    input: dict[str, Any]


class Revival(BaseModel):
    run_id: str
    at: float = Field(description="When the revival was decided (Unix time)")
    why: str = Field(description="What the supervisor saw")
    action: Action
    stuck_for_s: float = Field(description="How long the run had made no progress")
    generation: int = Field(description="The run's generation after this revival (1: first)")
    phase: str | None = None
    status: str | None = None
    outcome: str = Field("pending", description="ok, or what failed")
    by: str = Field(description="The replica that acted")


class RevivalRecord(BaseModel):
    run_id: str
    generation: int = 1
    revivals: list[Revival] = Field(default_factory=list)


class Verdict(BaseModel):
    """Why a run is (not) stuck, for one pass."""

    run_id: str
    stuck: bool
    why: str
    stuck_for_s: float = 0.0
    #: the run's last real progress (its revivals not counted)
    moved_at: float = 0.0
    phase: str | None = None
    status: str | None = None


def journal_available() -> bool:
    return importlib.util.find_spec("swarmd.engine.journal") is not None


def _ts(dt: datetime | None) -> float:
    return dt.timestamp() if dt is not None else 0.0


def _phase(st: WorkflowState) -> str | None:
    if not st.serialized_custom_status:
        return None
    with contextlib.suppress(ValueError, AttributeError):
        raw = json.loads(st.serialized_custom_status)
        return str(raw.get("phase")) if isinstance(raw, dict) else None
    return None


def judge(
    run_id: str,
    entry: dict[str, Any],
    st: WorkflowState | None,
    pulse: dict[str, Any] | None,
    now: float,
    settings: Settings,
    watching_since: float = 0.0,
) -> Verdict:
    """Pure: is this run stuck now? (Thresholds by state; see the module doc.)

    ``watching_since``: when this supervisor started looking (its process's first
    pass). Time before it does not count as idle: a replica that just started has
    seen no pulses, and after an app restart the runs wait for their activities to be
    dispatched to the new process (the chaos suite saw runs revived for the app's own
    20-40 s restart)."""
    if st is None:
        return Verdict(run_id=run_id, stuck=False, why="no workflow (not started, or purged)")
    status = st.runtime_status.name.lower()
    phase = _phase(st)
    v = {"run_id": run_id, "phase": phase, "status": status}
    if st.runtime_status in ENDED:
        return Verdict(stuck=False, why="ended", **v)
    if st.runtime_status == WorkflowStatus.SUSPENDED:
        return Verdict(stuck=False, why="paused", **v)
    if phase in WAITING_PHASES:
        return Verdict(stuck=False, why="waiting for approval", **v)
    p = pulse or {}
    if p.get("inflight") and p.get("oldest") is not None:
        age = now - float(p["oldest"])
        if age < settings.inflight_grace_s:
            return Verdict(stuck=False, why=f"a call in flight for {age:.0f}s", **v)
    moved = max(
        float(entry.get("t") or 0),
        _ts(st.last_updated_at),
        _ts(st.created_at),
        float(p.get("last") or 0),
    )
    idle = now - max(moved, float(entry.get("revived_at") or 0), watching_since)
    if idle < settings.stall_after_s:
        return Verdict(stuck=False, why=f"moved {idle:.0f}s ago", **v)
    why = f"no progress for {idle:.0f}s ({status}, phase {phase or '-'}, nothing in flight)"
    return Verdict(stuck=True, why=why, stuck_for_s=round(idle, 3), moved_at=moved, **v)


async def force_purge(client: Any, instance: str, recursive: bool = True) -> None:
    """Purge a workflow and its children whatever its state (``force``, Dapr 1.18's
    PurgeInstances; the Python client does not expose the flag, so the request is
    sent on the client's own gRPC stub)."""
    from dapr.ext.workflow._durabletask.internal import orchestrator_service_pb2 as pb

    inner = client._DaprWorkflowClient__obj  # the SDK's durabletask client
    req = pb.PurgeInstancesRequest(instanceId=instance, recursive=recursive, force=True)
    await inner._get_stub().PurgeInstances(req)


class RunSupervisor:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        owner: str,
        tracker: RunTracker,
        state: DaprClient,
    ) -> None:
        """``state``: the process's Dapr client (made and closed by the entrypoint)."""
        self.settings = settings
        self.metrics = metrics
        self.owner = owner
        self.tracker = tracker
        self.state = state
        self.last_pass: float | None = None
        #: when this supervisor first looked (see :func:`judge`'s ``watching_since``)
        self.watching_since: float | None = None
        self.leading = False
        self.last_verdicts: dict[str, Verdict] = {}

    # -- start input (the API's side) ----------------------------------------------
    async def remember_input(self, run_id: str, workflow: str, inp: dict[str, Any]) -> None:
        """Store a run's start input durably, before it is scheduled."""
        rec = StartInput(workflow=workflow, input=inp)
        await self.state.save(input_key(run_id), rec.model_dump(mode="json"), ttl_s=RECORD_TTL_S)

    async def start_input(self, run_id: str, st: WorkflowState | None) -> StartInput | None:
        item = await self.state.get(input_key(run_id))
        if isinstance(item.value, dict):
            with contextlib.suppress(ValidationError):
                return StartInput.model_validate(item.value)
        if st is not None and st.serialized_input and st.name:  # started before inputs were kept
            with contextlib.suppress(ValueError):
                raw = json.loads(st.serialized_input)
                if isinstance(raw, dict):
                    return StartInput(workflow=st.name, input=raw)
        return None

    async def forget(self, run_ids: list[str]) -> None:
        """Drop the stored inputs of runs that ended (revival records stay, with a TTL)."""
        for run_id in run_ids:
            with contextlib.suppress(DependencyUnavailable):
                await self.state.delete(input_key(run_id))

    # -- the loop ----------------------------------------------------------------------
    async def run(self, workflows: Callable[[], Any]) -> None:
        """Look every ``supervisor_interval_s`` (``workflows()``: the workflow client,
        None until the worker is connected) for as long as the app runs."""
        while True:
            client = workflows()
            try:
                if client is not None:
                    await self.pass_once(client)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("run supervisor: pass failed; will retry", exc_info=True)
            await asyncio.sleep(self.settings.supervisor_interval_s)

    async def _lead(self) -> bool:
        expiry = max(1, round(self.settings.supervisor_interval_s))
        try:
            ok = await self.state.try_lock(
                self.settings.lock_store, LEADER_LOCK, self.owner, expiry
            )
        except DependencyUnavailable:
            ok = False  # no lock store: nobody acts (safe), not everybody
        self.leading = ok
        return ok

    async def pulses(self) -> dict[str, dict[str, Any]]:
        """Every live owner's pulse, merged by run."""
        index = await read_index(self.state)
        items = await asyncio.gather(
            *(self.state.get(pulse_key(o)) for o in index.owners), return_exceptions=True
        )
        return merge([i.value for i in items if not isinstance(i, BaseException)])

    async def pass_once(self, client: Any, now: float | None = None) -> list[Revival]:
        """One look at every run in flight; returns the revivals it made."""
        item = await self.state.get(INDEX_KEY)
        index: dict[str, Any] = item.value if isinstance(item.value, dict) else {}
        self.last_pass = time.time()
        if self.watching_since is None:
            self.watching_since = now or self.last_pass
        if not index or not await self._lead():
            self.metrics.runs_stuck.set(0)
            return []
        pulses = await self.pulses()
        sem = asyncio.Semaphore(8)

        async def look(run_id: str, entry: dict[str, Any]) -> Verdict | None:
            if entry.get("reviving") and time.time() - float(entry["reviving"]) < 120:
                return None  # a revival of it is under way
            async with sem:
                try:
                    st = await asyncio.wait_for(
                        client.get_workflow_state(
                            instance_id(run_id, entry.get("generation")), fetch_payloads=True
                        ),
                        self.settings.revival_timeout_s,
                    )
                except Exception as exc:  # a wedged actor may not even answer reads
                    log.info("run unreadable", extra={"run_id": run_id, "error": str(exc)})
                    return None
            return judge(
                run_id,
                entry,
                st,
                pulses.get(run_id),
                now or time.time(),
                self.settings,
                self.watching_since or 0.0,
            )

        verdicts = [
            v
            for v in await asyncio.gather(*(look(k, v) for k, v in index.items()))
            if v is not None
        ]
        self.last_verdicts = {v.run_id: v for v in verdicts}
        stuck = [v for v in verdicts if v.stuck]
        self.metrics.runs_stuck.set(len(stuck))
        out: list[Revival] = []
        for v in stuck:
            r = await self.revive(client, v, index[v.run_id])
            if r is not None:
                out.append(r)
        return out

    # -- reviving --------------------------------------------------------------------
    def _fresh_allowed(self) -> bool:
        mode = self.settings.fresh_generation
        return mode == "always" or (mode == "auto" and journal_available())

    def _choose(self, rec: RevivalRecord, moved_at: float) -> Action:
        # revivals in a row: those after which the run did not move
        streak = 0
        for r in reversed(rec.revivals):
            if r.at < moved_at:
                break
            streak += 1
        actions = self.settings.revive_actions
        action = actions[min(streak, len(actions) - 1)]
        if action == "fresh_generation" and not self._fresh_allowed():
            action = "nudge"
        return action

    async def revive(self, client: Any, v: Verdict, entry: dict[str, Any]) -> Revival | None:
        """Claim the revival of a stuck run (ETag CAS) and carry it out."""
        item = await self.state.get(record_key(v.run_id))
        try:
            rec = (
                RevivalRecord.model_validate(item.value)
                if isinstance(item.value, dict)
                else RevivalRecord(run_id=v.run_id, generation=int(entry.get("generation") or 1))
            )
        except ValidationError:
            rec = RevivalRecord(run_id=v.run_id)
        now = time.time()
        action = self._choose(rec, v.moved_at)
        gen = rec.generation + (1 if action == "fresh_generation" else 0)
        r = Revival(
            run_id=v.run_id,
            at=now,
            why=v.why,
            action=action,
            stuck_for_s=v.stuck_for_s,
            generation=gen,
            phase=v.phase,
            status=v.status,
            by=self.owner,
        )
        new = rec.model_copy(update={"generation": gen, "revivals": [*rec.revivals, r][-50:]})
        if not await self.state.save(
            record_key(v.run_id),
            new.model_dump(mode="json"),
            etag=item.etag,
            first_write=True,
            ttl_s=RECORD_TTL_S,
        ):
            return None  # another supervisor claimed it
        log.warning(
            "reviving a stuck run: %s",
            action,
            extra={"run_id": v.run_id, "why": v.why, "stuck_for_s": v.stuck_for_s},
        )
        try:
            if action == "nudge":
                await self._nudge(client, instance_id(v.run_id, rec.generation))
            else:
                await self._fresh_generation(client, v.run_id, gen)
            r.outcome = "ok"
        except Exception as exc:
            r.outcome = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
            log.warning("revival failed", extra={"run_id": v.run_id, "error": r.outcome})
        self.metrics.revivals.labels(action, r.outcome.split(":")[0]).inc()
        self.metrics.revival_stuck_seconds.observe(v.stuck_for_s)
        with contextlib.suppress(Exception):
            await self.tracker.annotate(
                v.run_id, {"revived_at": time.time(), "generation": gen, "reviving": None}
            )
        with contextlib.suppress(Exception):
            await self._save_outcome(r)
        return r

    async def _nudge(self, client: Any, instance: str) -> None:
        await asyncio.wait_for(
            client.raise_workflow_event(instance, NUDGE_EVENT, data={"at": time.time()}),
            min(5.0, self.settings.revival_timeout_s),  # an event that hangs did not help
        )

    async def _fresh_generation(self, client: Any, run_id: str, generation: int) -> None:
        """Start generation ``generation`` of the run (workflow ``<run>:g<n>``, same
        input, same run id inside it), then force-purge the wedged one.

        Measured on Dapr 1.18.2 (tests/integration/test_supervisor.py): after daprd
        dies while a parent creates its children, the restarted daprd re-runs the
        parent, which re-creates children while those children deliver their results
        to it, each under its own actor lock: a deadlock that holds until daprd
        restarts, and forms again after it. Events, terminate and a plain purge
        wait on those locks like everything else. So the new generation gets a new
        workflow instance, whose actors are free, and the old one's state is
        purged with ``force`` (best effort), so nothing of it runs again."""
        t = self.settings.revival_timeout_s
        old = instance_id(run_id, generation - 1)
        st = None
        with contextlib.suppress(Exception):
            st = await asyncio.wait_for(client.get_workflow_state(old, fetch_payloads=True), t)
        start = await self.start_input(run_id, st)
        if start is None:
            raise DependencyUnavailable(f"run {run_id!r}: no stored start input")
        await self.tracker.annotate(run_id, {"reviving": time.time()})
        new = instance_id(run_id, generation)
        await asyncio.wait_for(
            client.schedule_new_workflow(start.workflow, input=start.input, instance_id=new), t
        )
        await self.tracker.annotate(run_id, {"generation": generation, "reviving": None})
        try:
            await asyncio.wait_for(force_purge(client, old, recursive=False), t)
        except Exception as exc:  # its state is usually gone even when the call hangs
            log.info("old generation not purged", extra={"run_id": run_id, "error": str(exc)})
        log.warning(
            "run restarted as a fresh generation",
            extra={"run_id": run_id, "generation": generation},
        )

    async def _save_outcome(self, r: Revival) -> None:
        """Record how revival ``r`` ended in the run's record and the recent list (each
        by compare-and-set; the second is tried even if the first fails)."""

        def in_record(value: Any) -> dict[str, Any] | None:
            if not isinstance(value, dict):
                return None  # no record (purged): nothing to update
            rec = RevivalRecord.model_validate(value)
            revs = [r if (x.at == r.at and x.by == r.by) else x for x in rec.revivals]
            return rec.model_copy(update={"revivals": revs}).model_dump(mode="json")

        def in_recent(value: Any) -> list[Any]:
            recent = value if isinstance(value, list) else []
            return [*recent, r.model_dump(mode="json")][-RECENT_MAX:]

        with contextlib.suppress(DependencyUnavailable):
            await self.state.update(
                record_key(r.run_id), in_record, ttl_of=lambda _: RECORD_TTL_S, attempts=20
            )
        await self.state.update(RECENT_KEY, in_recent, attempts=20, what="the recent revivals")

    # -- reading -----------------------------------------------------------------------
    async def generation(self, run_id: str) -> int:
        """The run's current generation (1 unless the supervisor restarted it)."""
        item = await self.state.get(record_key(run_id))
        if isinstance(item.value, dict):
            with contextlib.suppress(ValueError, TypeError):
                return int(item.value.get("generation") or 1)
        return 1

    async def recent(self, run_id: str | None = None, limit: int = 100) -> list[Revival]:
        if run_id is not None:
            item = await self.state.get(record_key(run_id))
            if not isinstance(item.value, dict):
                return []
            return RevivalRecord.model_validate(item.value).revivals[-limit:]
        item = await self.state.get(RECENT_KEY)
        raw = item.value if isinstance(item.value, list) else []
        out: list[Revival] = []
        for x in raw[-limit:]:
            with contextlib.suppress(ValidationError):
                out.append(Revival.model_validate(x))
        return out
