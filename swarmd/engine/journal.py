"""The call journal: every LLM and tool call of a run is paid for once.

Each call a workflow asks for has a deterministic **call key**, given by the
workflow: ``<agent>/<step>/<turn>/<call index>`` (no attempt number, no time).
Before an activity makes the call it looks the key up; after the call
succeeds it writes the result under ``journal|<run>|<call key>`` **before the
activity returns**. So whatever makes the same call happen again — Dapr
re-running an activity after an app, daprd or scheduler crash, a completion
Dapr lost, an engine retry after a later failure in the same step, or a fresh
generation of the whole run under the same run id — finds the entry and
returns it without calling the model (or the tool) again.

Invariants:

* Only successes are journaled: a failed call is tried again; a finished one
  never is.
* An entry carries a fingerprint of the request it answered (model, messages,
  tools; not the trace). A key whose entry has another fingerprint is a
  different call (the workflow changed under the same key): it is made again
  and the entry replaced, never answered with the wrong result.
* Reads and writes are batched across the concurrent calls of one process: a
  group prefetches its agents' first-turn entries in one bulk read, and
  entries answered within a few milliseconds of each other are written in one
  request, one such request in flight per event loop (entries answered while
  one is in flight go in the next). A call's result still reaches the store
  before the call returns.
* Every entry's key is recorded in the run's key index
  (:class:`swarmd.engine.runkeys.RunKeys`) before the entry is written, so
  purging the run deletes it; entries also expire after the retention period
  (``SWARMD_JOURNAL_RETENTION_S``).
* Within one process a call is made at most once at a time: a second
  :meth:`Journal.once` for a key whose call is in flight waits for that call,
  and one for a key this process answered in the last :data:`RECENT_S` gets
  that answer (same fingerprint only). Dapr runs one activity twice at once
  when its stream to the worker churns (daprd restarted under a running
  activity: the old execution goes on, the re-dispatched one starts beside it,
  dapr/dapr#9903); both executions walk the same calls a few seconds apart,
  and the second one's prefetched misses are stale by then. The chaos suite
  counted 19 calls of one run paid twice that way.
* An answer whose write failed (the store unreachable) is kept in this process
  (among the last :data:`RECENT_MAX`) until a later :meth:`Journal.once` for
  its key has written it, and that one writes it before returning it: the
  activity's retry pays nothing and leaves the entry in the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from swarmd.engine.runkeys import RunKeys
from swarmd.engine.state import StateStore
from swarmd.errors import ActivityError, DependencyUnavailable, JournalUnavailable


def call_key(agent: str, step: str, turn: int = 1, call: int = 0) -> str:
    """The journal key of one call, relative to its run."""
    return f"{agent}/{step}/{turn}/{call}"


def entry_key(run_id: str, key: str) -> str:
    # Dapr refuses keys holding "||"; single "|" separators only
    return f"journal|{run_id}|{key}"


def fingerprint(request: Any) -> str:
    """A stable digest of what a call asks (JSON-able), independent of key order."""
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


#: entries written together: those answered within this long of the first
WRITE_BATCH_S = 0.005
WRITE_BATCH_MAX = 200
#: how long a process remembers the answers it journaled (duplicate executions of one
#: activity start within seconds of each other; a purged run re-run later pays again)
RECENT_S = 120.0
RECENT_MAX = 4096

Prefetched = dict[str, Any]
"""Entries read ahead (``key -> raw entry or None``); a key in it is not read again."""


class _Writes:
    """Entries waiting to be written in one request, and who waits for them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any, int | None]] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Journal:
    def __init__(self, state: StateStore, keys: RunKeys, retention_s: int | None = None) -> None:
        self.state = state
        self.keys = keys
        self.retention_s = retention_s
        #: calls answered from the journal / made, since start (for metrics and tests)
        self.replayed = 0
        self.made = 0
        self._writes: dict[int, _Writes] = {}  # per event loop
        #: per event loop, one write at a time
        self._writer: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._flushing: set[asyncio.Future[None]] = set()
        #: (loop, run, key) -> (fingerprint, the call in flight in this process)
        self._inflight: dict[
            tuple[int, str, str], tuple[str, asyncio.Future[dict[str, Any] | None]]
        ] = {}
        #: (run, key) -> (fingerprint, result, when, written): answers this process made
        #: (written: journaled; not yet if the write failed)
        self._recent: OrderedDict[tuple[str, str], tuple[str, dict[str, Any], float, bool]] = (
            OrderedDict()
        )

    async def prefetch(self, run_id: str, keys: list[str]) -> Prefetched:
        """The entries of ``keys`` in one bulk read (for :meth:`once`'s ``known``)."""
        if not keys:
            return {}
        eks = {entry_key(run_id, k): k for k in keys}
        try:
            found = await self.state.get_many(list(eks))
        except (ActivityError, DependencyUnavailable) as exc:
            raise JournalUnavailable(f"journal read of {run_id!r}: {exc}") from exc
        return {eks[ek]: e.value for ek, e in found.items()}

    async def lookup(
        self, run_id: str, key: str, fp: str, known: Prefetched | None = None
    ) -> dict[str, Any] | None:
        if known is not None and key in known:
            raw = known.pop(key)
        else:
            try:
                raw = await self.state.get(entry_key(run_id, key))
            except (ActivityError, DependencyUnavailable) as exc:
                raise JournalUnavailable(f"journal read {key!r}: {exc}") from exc
        if isinstance(raw, dict) and raw.get("fp") == fp and isinstance(raw.get("result"), dict):
            self.replayed += 1
            return dict(raw["result"])
        return None

    async def _write(self, key: str, value: Any) -> None:
        """Write one entry, together with those other calls write at the same moment."""
        loop_id = id(asyncio.get_running_loop())
        batch = self._writes.get(loop_id)
        if batch is None or len(batch.items) >= WRITE_BATCH_MAX:
            batch = self._writes[loop_id] = _Writes()
            asyncio.get_running_loop().call_later(WRITE_BATCH_S, self._start_flush, loop_id, batch)
        batch.items.append((key, value, self.retention_s))
        await asyncio.shield(batch.done)

    def _start_flush(self, loop_id: int, batch: _Writes) -> None:
        task = asyncio.ensure_future(self._flush(loop_id, batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, loop_id: int, batch: _Writes) -> None:
        # One write in flight per loop; the batch takes more entries while it waits.
        # The store serializes writers anyway (SQLite: one write transaction at a
        # time, and a blocked writer sleeps in its busy handler for up to 100 ms a
        # turn): 17 concurrent batches of a 1,000-agent run took ~1 s each.
        writer = self._writer.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with writer:
            if self._writes.get(loop_id) is batch:
                del self._writes[loop_id]
            try:
                await self.state.put_many(batch.items)
            except Exception as exc:  # every waiter of the batch sees the failure
                batch.done.set_exception(exc)
            else:
                batch.done.set_result(None)

    async def index(self, run_id: str, keys: list[str]) -> None:
        """Record call keys in the run's key index ahead of their calls (one write for
        a whole group), so :meth:`once` can skip its own index write (``indexed``)."""
        try:
            await self.keys.add(run_id, [entry_key(run_id, k) for k in keys])
        except (ActivityError, DependencyUnavailable) as exc:
            raise JournalUnavailable(f"journal index of {run_id!r}: {exc}") from exc

    async def record(
        self, run_id: str, key: str, fp: str, result: dict[str, Any], indexed: bool = False
    ) -> None:
        ek = entry_key(run_id, key)
        try:
            if not indexed:
                await self.keys.add(run_id, [ek])
            await self._write(ek, {"fp": fp, "result": result})
        except (ActivityError, DependencyUnavailable) as exc:
            raise JournalUnavailable(f"journal write {key!r}: {exc}") from exc

    async def once(
        self,
        run_id: str,
        key: str | None,
        request: Any,
        make: Callable[[], Awaitable[dict[str, Any]]],
        *,
        indexed: bool = False,
        known: Prefetched | None = None,
    ) -> dict[str, Any]:
        """The journaled result of the call ``key``, else ``make()``'s (then journaled).

        With ``key`` None (a caller that has no key, e.g. a run started on an
        engine version before the journal) the call is simply made. ``indexed``: the
        key is already in the run's key index (see :meth:`index`); ``known``: entries
        read ahead by :meth:`prefetch`."""
        if key is None:
            return await make()
        fp = fingerprint(request)
        while (local := self._local(run_id, key, fp)) is not None:
            answer = await asyncio.shield(local)
            if answer is not None:  # else that call failed: make it here
                self.replayed += 1
                if self._unwritten(run_id, key, fp):  # its write failed: write it now
                    await self.record(run_id, key, fp, answer, indexed)
                    self._remember(run_id, key, fp, answer, written=True)
                return dict(answer)
        slot = (id(asyncio.get_running_loop()), run_id, key)
        fut: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._inflight[slot] = (fp, fut)
        found: dict[str, Any] | None = None
        try:
            found = await self.lookup(run_id, key, fp, known)
            if found is None:
                result = await make()
                self.made += 1
                # known here even if the write below fails (the activity is retried,
                # and its retry writes it before it returns it)
                self._remember(run_id, key, fp, result, written=False)
                found = result
                await self.record(run_id, key, fp, result, indexed)
                self._remember(run_id, key, fp, result, written=True)
            return found
        finally:
            if self._inflight.get(slot, ("", None))[1] is fut:
                del self._inflight[slot]
            fut.set_result(found)  # None: the call failed or was cancelled; waiters make it

    def _local(
        self, run_id: str, key: str, fp: str
    ) -> asyncio.Future[dict[str, Any] | None] | None:
        """This process's call in flight for the key, or its recent answer, if any."""
        inflight = self._inflight.get((id(asyncio.get_running_loop()), run_id, key))
        if inflight is not None and inflight[0] == fp:
            return inflight[1]
        recent = self._recent.get((run_id, key))
        if recent is None or recent[0] != fp:
            return None
        _, result, when, written = recent
        if not written or time.monotonic() - when < RECENT_S:  # unwritten: kept until written
            done: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
            done.set_result(result)
            return done
        return None

    def _unwritten(self, run_id: str, key: str, fp: str) -> bool:
        """This process answered the call but could not journal the answer yet."""
        recent = self._recent.get((run_id, key))
        return recent is not None and recent[0] == fp and not recent[3]

    def _remember(
        self, run_id: str, key: str, fp: str, result: dict[str, Any], *, written: bool
    ) -> None:
        self._recent[(run_id, key)] = (fp, result, time.monotonic(), written)
        self._recent.move_to_end((run_id, key))
        while len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)
