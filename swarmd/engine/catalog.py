"""The durable catalog of runs and of user agents, for listing them.

Dapr's state API cannot list or query keys (and the local SQLite store has no
query API), so the catalog keeps its own index in ordinary keys, sized so that
no key grows with the total number of runs:

* ``swarmd-run|<run_id>``: the run's record (:class:`RunRecord`): swarm, user,
  owner, status, timestamps, and once the run has ended its final progress,
  usage and stop reason. Written when the run starts (status ``pending``) and
  by the run tracker when it ends, in the same transaction that takes the run
  out of the in-flight index (so an end is recorded once).
* ``swarmd-runs|days``: the sorted list of UTC days on which runs started
  (one short string a day: a few KiB after ten years).
* per day, a :class:`PagedIndex` under ``swarmd-runs|d|<day>``: a head key with
  the page count and pages ``swarmd-runs|d|<day>|<n>`` of at most
  :data:`PAGE_SIZE` immutable entries ``{id, t, swarm, user, owner}``. A start
  appends to the day's last page (compare-and-set on its ETag), or opens the
  next page once that one is full. The record remembers its day and page, so a
  purge removes the entry without a search.

A list walks days newest first, pages newest first, entries by ``(t, id)``
descending, filters on the entry fields (swarm, user, owner, start time; days
outside the time range are never read), then reads the candidates' records in
one bulk get and filters on status. Each request examines at most
:data:`SCAN_BUDGET` entries, so a rare filter over a huge catalog stays cheap
per request: it may then answer fewer items than asked together with a cursor
to continue from; only a null cursor means the end.

Agents use one :class:`PagedIndex` (``swarmd-agents``) without days: an entry
per provisioned user, removed on deprovision.

Invariant: every entry in a page has a record, except for the short window of
a start or purge in progress; a list skips entries whose record is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from dapr.ext.workflow import WorkflowState, WorkflowStatus
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarmd.engine.dapr import DaprClient
from swarmd.engine.models import Progress, Usage
from swarmd.engine.status import ENDED
from swarmd.errors import DependencyUnavailable, ValidationFailed

#: entries per index page (SWARMD_CATALOG_PAGE_SIZE)
PAGE_SIZE = 200
#: entries one list request examines at most
SCAN_BUDGET = 2000
RUN_PREFIX = "swarmd-run|"
DAYS_KEY = "swarmd-runs|days"
AGENTS_PREFIX = "swarmd-agents"

RunStatus = Literal[
    "pending", "running", "completed", "failed", "terminated", "suspended", "unknown"
]
#: the API's names of the ended statuses (swarmd.engine.status.ENDED)
ENDED_STATUSES: frozenset[str] = frozenset(s.name.lower() for s in ENDED)
ACTIVE_STATUSES: frozenset[str] = frozenset({"pending", "running", "suspended"})
#: the run tracker's index of runs in flight (swarmd.engine.tracker.INDEX_KEY)
IN_FLIGHT_KEY = "swarmd-runs-in-flight"


Upsert = tuple[str, Any, str | None]


class RunRecord(BaseModel):
    """One run as the catalog knows it (the item of ``GET /v1/runs``)."""

    model_config = ConfigDict(extra="ignore")
    run_id: str
    swarm: str
    status: RunStatus = Field(description="live status for runs in flight, else the final one")
    user: str | None = Field(None, description="input.user of the start request")
    owner: str | None = Field(
        None, description="the user who owns the run: its input.user (null: operators only)"
    )
    created_at: str = Field(description="when the run was started (ISO 8601, UTC)")
    ended_at: str | None = Field(None, description="when it ended (ISO 8601, UTC)")
    progress: Progress | None = Field(
        None, description="agents done/total, round, phase (the last published, once ended)"
    )
    usage: Usage = Field(
        default_factory=Usage, description="tokens, LLM calls and cost (usage.cost_usd) so far"
    )
    stop_reason: str | None = Field(None, description="token_budget or deadline: ended early")
    error: str | None = None
    #: where the run's catalog entry lives (for purge)
    day: str = Field(exclude=True, default="")
    page: int = Field(exclude=True, default=0)


#: current records of runs in flight, by run id (the API reads their workflow state);
#: None for a run whose workflow does not exist
Resolve = Callable[[list[RunRecord]], Awaitable[dict[str, RunRecord | None]]]
#: a record whose workflow does not exist this long after its start was never started
#: (its start request failed before scheduling it): a list drops it from the catalog
ORPHAN_AFTER_S = 120.0


def run_key(run_id: str) -> str:
    return RUN_PREFIX + run_id


def day_of(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).date().isoformat()


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0.005, 0.02 * (attempt + 1)))


class PagedIndex:
    """An append-mostly list of small entries (``{"id": ..., ...}``) in pages of
    :data:`PAGE_SIZE` under ``<prefix>`` (head: ``{"pages": n}``) and
    ``<prefix>|<page>``. Pages never move; an entry stays in its page until removed."""

    def __init__(self, state: DaprClient, prefix: str, page_size: int = PAGE_SIZE) -> None:
        self.state = state
        self.prefix = prefix
        self.page_size = page_size

    def page_key(self, page: int) -> str:
        return f"{self.prefix}|{page}"

    async def pages(self) -> int:
        head = await self.state.get(self.prefix)
        return int(head.value.get("pages", 0)) if isinstance(head.value, dict) else 0

    async def page(self, page: int) -> list[dict[str, Any]]:
        item = await self.state.get(self.page_key(page))
        return list(item.value) if isinstance(item.value, list) else []

    async def add(
        self,
        entry: dict[str, Any],
        also: Callable[[], Awaitable[Upsert | None]] | None = None,
    ) -> int:
        """Append ``entry`` (idempotent by id in the last page); returns its page.
        ``also`` returns extra ``(key, value, etag)`` upserts (or None) to commit with
        the head when this opens the index's first page."""
        for attempt in range(50):
            head = await self.state.get(self.prefix)
            n = int(head.value.get("pages", 0)) if isinstance(head.value, dict) else 0
            if n > 0:
                last = await self.state.get(self.page_key(n - 1))
                entries = list(last.value) if isinstance(last.value, list) else []
                if any(e.get("id") == entry["id"] for e in entries):
                    return n - 1
                if len(entries) < self.page_size:
                    if await self.state.transact(
                        [(self.page_key(n - 1), [*entries, entry], last.etag)]
                    ):
                        return n - 1
                    await _backoff(attempt)
                    continue
            ops: list[Upsert] = [
                (self.prefix, {"pages": n + 1}, head.etag),
                (self.page_key(n), [entry], None),
            ]
            if n == 0 and also is not None:
                extra = await also()
                if extra is not None:
                    ops.append(extra)
            if await self.state.transact(ops):
                return n
            await _backoff(attempt)
        raise DependencyUnavailable(f"could not update {self.prefix}: too much contention")

    async def remove(self, entry_id: str, page: int) -> None:
        for attempt in range(50):
            item = await self.state.get(self.page_key(page))
            entries = list(item.value) if isinstance(item.value, list) else []
            kept = [e for e in entries if e.get("id") != entry_id]
            if len(kept) == len(entries):
                return
            if await self.state.transact([(self.page_key(page), kept, item.etag)]):
                return
            await _backoff(attempt)
        raise DependencyUnavailable(f"could not update {self.prefix}: too much contention")


#: a cursor is a position, ``<day>.<page>.<start time in µs>.<id>``; every string that
#: matches is a valid position (the list continues after it), so the schema says it all
CURSOR_RE = r"^(\d{4}-\d{2}-\d{2})?\.\d{1,6}\.\d{1,20}\.[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
_CURSOR = re.compile(CURSOR_RE)


class Cursor(BaseModel):
    """Where a list stopped: the position of the last entry it consumed (``d`` is empty
    for a walk of the in-flight index)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    d: str = ""
    p: int
    t: int = Field(description="start time in microseconds")
    id: str

    @classmethod
    def at(cls, e: dict[str, Any], d: str = "", p: int = 0) -> Cursor:
        t, id_ = _key(e)
        return cls(d=d, p=p, t=t, id=id_)

    @property
    def key(self) -> tuple[int, str]:
        return self.t, self.id

    def encode(self) -> str:
        return f"{self.d}.{self.p}.{self.t}.{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        if not _CURSOR.fullmatch(text):
            raise ValidationFailed(
                "cursor: not a cursor this API returned (pass next_cursor unchanged)",
                field="cursor",
            )
        d, p, t, id_ = text.split(".", 3)
        return cls(d=d, p=int(p), t=int(t), id=id_)


def decode_cursor(text: str | None) -> Cursor | None:
    return Cursor.decode(text) if text else None


class RunQuery(BaseModel):
    """Filters of a run list. ``owner`` is not a query parameter: the API sets it from
    the caller's identity (None: the caller may see every run)."""

    status: frozenset[str] = frozenset()
    swarm: str | None = None
    user: str | None = None
    owner: str | None = None
    started_after: float | None = None
    started_before: float | None = None
    limit: int = 50
    cursor: Cursor | None = None

    def entry_matches(self, e: dict[str, Any]) -> bool:
        t = _us(float(e.get("t", 0)))  # microseconds, as created_at shows it
        return (
            (self.swarm is None or e.get("swarm") == self.swarm)
            and (self.user is None or e.get("user") == self.user)
            and (self.owner is None or e.get("owner") == self.owner)
            and (self.started_after is None or t >= _us(self.started_after))
            and (self.started_before is None or t < _us(self.started_before))
        )


def _created(rec: RunRecord) -> float:
    try:
        return datetime.fromisoformat(rec.created_at).timestamp()
    except ValueError:
        return 0.0


def _us(t: float) -> int:
    """Microseconds since the epoch, rounded exactly as ``created_at`` shows ``t``
    (``datetime.fromtimestamp``): ``round(t * 1e6)`` could differ from it by one, so a
    run asked for with its own ``created_at`` as ``started_after`` was sometimes left out."""
    d = datetime.fromtimestamp(t, UTC)
    return (d - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _key(e: dict[str, Any]) -> tuple[int, str]:
    """An entry's place in a list: (start time in µs, id), newest first."""
    return _us(float(e.get("t", 0))), str(e.get("id", ""))


class RunCatalog:
    """Writes and lists the run catalog (see the module docstring for the layout)."""

    def __init__(self, state: DaprClient, page_size: int = PAGE_SIZE) -> None:
        self.state = state
        self.page_size = page_size

    def day_index(self, day: str) -> PagedIndex:
        return PagedIndex(self.state, f"swarmd-runs|d|{day}", self.page_size)

    # -- writes ----------------------------------------------------------------
    async def add(
        self,
        run_id: str,
        swarm: str,
        user: str | None,
        owner: str | None = None,
        t: float | None = None,
    ) -> RunRecord:
        """Record a starting run (before its workflow is scheduled). Idempotent."""
        t = time.time() if t is None else t
        day = day_of(t)
        existing = await self.record(run_id)
        if existing is not None:
            return existing
        entry = {"id": run_id, "t": t, "swarm": swarm, "user": user, "owner": owner}
        index = self.day_index(day)
        page = await index.add(entry, also=lambda: self._with_day(day))
        rec = RunRecord(
            run_id=run_id,
            swarm=swarm,
            status="pending",
            user=user,
            owner=owner,
            created_at=datetime.fromtimestamp(t, UTC).isoformat(),
            day=day,
            page=page,
        )
        await self.state.save(run_key(run_id), _dump(rec))
        return rec

    async def _with_day(self, day: str) -> Upsert | None:
        item = await self.state.get(DAYS_KEY)
        days = list(item.value) if isinstance(item.value, list) else []
        if day in days:
            return None
        return DAYS_KEY, sorted({*days, day}), item.etag

    async def record(self, run_id: str) -> RunRecord | None:
        item = await self.state.get(run_key(run_id))
        return _parse(item.value)

    async def ended_upsert(self, run_id: str, update: dict[str, Any]) -> Upsert | None:
        """The upsert that records a run's end (for the tracker's transaction), or None
        when the run has no record (started before the catalog existed)."""
        item = await self.state.get(run_key(run_id))
        rec = _parse(item.value)
        if rec is None:
            return None
        rec = rec.model_copy(update={"ended_at": datetime.now(UTC).isoformat(), **update})
        return run_key(run_id), _dump(rec), item.etag

    async def end_hook(self, batch: list[tuple[str, Any, WorkflowState, Any]]) -> list[Upsert]:
        """The run tracker's end hook: the ended runs' final records, written in the
        transaction that takes them out of the in-flight index (so exactly once)."""
        ups = [await self.ended_upsert(run_id, final_update(st)) for run_id, _, st, _ in batch]
        return [u for u in ups if u is not None]

    async def remove(self, run_id: str) -> None:
        """Take a run out of the catalog (purged, or never started)."""
        rec = await self.record(run_id)
        if rec is None:
            return
        if rec.day:
            await self.day_index(rec.day).remove(run_id, rec.page)
        await self.state.delete(run_key(run_id))

    # -- reads -----------------------------------------------------------------
    async def days(self) -> list[str]:
        item = await self.state.get(DAYS_KEY)
        return sorted(item.value) if isinstance(item.value, list) else []

    async def scan(self, q: RunQuery, live: Resolve) -> tuple[list[RunRecord], Cursor | None]:
        """Runs matching ``q``, newest first: at most ``q.limit`` of them, after examining
        at most :data:`SCAN_BUDGET` entries, with the cursor after the last entry it
        consumed (None: nothing more). ``live`` gives the current state of records whose
        run is still in flight (their stored status is the one at start)."""
        if q.status and q.status <= ACTIVE_STATUSES:
            return await self._scan_in_flight(q, live)
        lo = day_of(q.started_after) if q.started_after is not None else ""
        hi = day_of(q.started_before) if q.started_before is not None else "9999"
        days = [d for d in reversed(await self.days()) if lo <= d <= hi]
        if q.cursor is not None:
            days = [d for d in days if d <= q.cursor.d]
        found: list[RunRecord] = []
        examined = 0
        for day in days:
            index = self.day_index(day)
            top = await index.pages() - 1
            if q.cursor is not None and day == q.cursor.d:
                top = min(top, q.cursor.p)
            for p in range(top, -1, -1):
                entries = sorted(await index.page(p), key=_key, reverse=True)
                if q.cursor is not None and day == q.cursor.d and p == q.cursor.p:
                    entries = [e for e in entries if _key(e) < q.cursor.key]
                entries = entries[: SCAN_BUDGET - examined]
                recs = await self._records([e for e in entries if q.entry_matches(e)], live)
                for e in entries:
                    examined += 1
                    rec = recs.get(str(e["id"]))
                    if rec is not None and (not q.status or rec.status in q.status):
                        found.append(rec)
                    if len(found) >= q.limit or examined >= SCAN_BUDGET:
                        return found, Cursor.at(e, day, p)
        return found, None

    async def _scan_in_flight(
        self, q: RunQuery, live: Resolve
    ) -> tuple[list[RunRecord], Cursor | None]:
        """Only runs in flight are wanted: walk the in-flight index (one key, as long as
        the runs in flight) instead of the whole catalog."""
        item = await self.state.get(IN_FLIGHT_KEY)
        index = item.value if isinstance(item.value, dict) else {}
        entries = [{**v, "id": k} for k, v in index.items() if isinstance(v, dict)]
        entries.sort(key=_key, reverse=True)
        if q.cursor is not None:
            entries = [e for e in entries if _key(e) < q.cursor.key]
        found: list[RunRecord] = []
        for start in range(0, min(len(entries), SCAN_BUDGET), PAGE_SIZE):
            batch = entries[start : start + PAGE_SIZE]
            recs = await self._records([e for e in batch if q.entry_matches(e)], live)
            for i, e in enumerate(batch):
                rec = recs.get(str(e["id"]))
                if rec is not None and rec.status in q.status:
                    found.append(rec)
                if len(found) >= q.limit or start + i + 1 >= SCAN_BUDGET:
                    more = start + i + 1 < len(entries)
                    cur = Cursor.at(e)
                    return found, cur if more else None
        return found, None

    async def _records(self, entries: list[dict[str, Any]], live: Resolve) -> dict[str, RunRecord]:
        """The stored records of these entries by run id (missing ones left out), those
        still in flight brought up to date by ``live``."""
        keys = [run_key(str(e["id"])) for e in entries]
        got = await self.state.get_many(keys) if keys else {}
        recs = [r for r in (_parse(got.get(k)) for k in keys) if r is not None]
        pending = [r for r in recs if r.status not in ENDED_STATUSES]
        if not pending:
            return {r.run_id: r for r in recs}
        fresh = await live(pending)
        out: dict[str, RunRecord] = {}
        for r in recs:
            cur = fresh.get(r.run_id, r)
            if cur is not None:
                out[r.run_id] = cur
            elif time.time() - _created(r) > ORPHAN_AFTER_S:
                await self.remove(r.run_id)  # its workflow was never scheduled
        return out


class AgentQuery(BaseModel):
    """Filters of an agent list; ``owner`` as in :class:`RunQuery` (a user sees only
    their own agent)."""

    template: str | None = None
    owner: str | None = None
    limit: int = 50
    cursor: Cursor | None = None


class AgentCatalog:
    """The index of provisioned user agents: entries ``{id: user, t, template}`` in one
    :class:`PagedIndex`, and ``swarmd-agent-loc|<user>`` remembering each one's page."""

    def __init__(self, state: DaprClient, page_size: int = PAGE_SIZE) -> None:
        self.state = state
        self.index = PagedIndex(state, AGENTS_PREFIX, page_size)

    @staticmethod
    def loc_key(user: str) -> str:
        return f"{AGENTS_PREFIX}-loc|{user}"

    async def add(self, user: str, template: str) -> None:
        """Index a provisioned agent (idempotent: a repeated provision heals a missing entry)."""
        if (await self.state.get(self.loc_key(user))).value is not None:
            return
        entry = {"id": user, "t": time.time(), "template": template}
        page = await self.index.add(entry)
        await self.state.save(self.loc_key(user), {"page": page})

    async def remove(self, user: str) -> None:
        loc = (await self.state.get(self.loc_key(user))).value
        if not isinstance(loc, dict):
            return
        await self.index.remove(user, int(loc.get("page", 0)))
        await self.state.delete(self.loc_key(user))

    async def scan(self, q: AgentQuery) -> tuple[list[dict[str, Any]], Cursor | None]:
        """Entries matching ``q``, newest first (pagination as in :meth:`RunCatalog.scan`)."""
        top = await self.index.pages() - 1
        if q.cursor is not None:
            top = min(top, q.cursor.p)
        found: list[dict[str, Any]] = []
        examined = 0
        for p in range(top, -1, -1):
            entries = sorted(await self.index.page(p), key=_key, reverse=True)
            if q.cursor is not None and p == q.cursor.p:
                entries = [e for e in entries if _key(e) < q.cursor.key]
            for e in entries:
                examined += 1
                if (q.template is None or e.get("template") == q.template) and (
                    q.owner is None or e.get("id") == q.owner
                ):
                    found.append(e)
                if len(found) >= q.limit or examined >= SCAN_BUDGET:
                    return found, Cursor.at(e, p=p)
        return found, None


def _dump(rec: RunRecord) -> dict[str, Any]:
    return {**rec.model_dump(mode="json"), "day": rec.day, "page": rec.page}


def _parse(raw: Any) -> RunRecord | None:
    if not isinstance(raw, dict):
        return None
    try:
        return RunRecord.model_validate(raw)
    except ValidationError:
        return None


_FINAL: dict[WorkflowStatus, RunStatus] = {
    WorkflowStatus.COMPLETED: "completed",
    WorkflowStatus.FAILED: "failed",
    WorkflowStatus.TERMINATED: "terminated",
}


def final_update(st: WorkflowState) -> dict[str, Any]:
    """What an ended run's record gets from its workflow state (fetched with payloads)."""
    progress = None
    if st.serialized_custom_status:
        with contextlib.suppress(ValidationError, ValueError):
            progress = Progress.model_validate_json(st.serialized_custom_status)
    out: Any = None
    if st.serialized_output:
        with contextlib.suppress(ValueError):
            out = json.loads(st.serialized_output)
    usage = progress.usage if progress is not None else Usage()
    stop = None
    if isinstance(out, dict) and isinstance(out.get("usage"), dict):
        with contextlib.suppress(ValidationError):
            usage = Usage.model_validate(out["usage"])
        stop = out.get("stop_reason")
    return {
        "status": _FINAL.get(st.runtime_status, "unknown"),
        "progress": progress,
        "usage": usage,
        "stop_reason": stop,
        "error": st.failure_details.message if st.failure_details else None,
        "ended_at": (st.last_updated_at or datetime.now(UTC)).astimezone(UTC).isoformat(),
    }
