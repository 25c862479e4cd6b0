"""The owner registry: who holds which locks and state markers, and who is alive.

Every app process is one **owner incarnation**: ``<pod>:<per-start id>``, so a
restarted process (same pod) is a different owner. It keeps, in the Dapr state
store:

``swarmd-owner.<id>.hb``
    heartbeat, rewritten every ``owner_heartbeat_s`` with a TTL of
    ``owner_ttl_s``; carries pod, pid, the pid's start time and pid namespace
    so a watchdog in the same pod can watch the process itself. A watchdog
    that reaps the owner overwrites it with a *fence* (``fenced_by``); the
    owner's heartbeat is an ETag compare-and-set, so it can never overwrite a
    fence, and it notices the fence at its next beat.
``swarmd-owner.<id>.holds``
    the locks and marker keys it holds. A lock is recorded *before* it is
    taken and forgotten *after* it is released, so a crash in between leaves
    at most a harmless extra unlock (Dapr's unlock is compare-and-delete by
    owner) and never an unrecorded lock.
``swarmd-owners``
    the index of live owners, changed by ETag compare-and-set, which is how
    a watchdog anywhere in the cluster finds owners to sweep (Dapr's state API
    cannot list keys).

The owner measures its own lease: if no heartbeat succeeded for longer than
the store could keep the last one, it treats every lock it holds as lost and
starts over as a new incarnation (its old one is reaped like a dead one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from swarmd.engine.dapr import DaprClient
from swarmd.errors import DependencyUnavailable, LeaseLost

log = logging.getLogger("swarmd.owner")
T = TypeVar("T")

INDEX_KEY = "swarmd-owners"
#: How long a fence (a reaped owner's heartbeat record) and a reap record stay.
RECORD_TTL_S = 24 * 3600


def hb_key(owner: str) -> str:
    return f"swarmd-owner.{owner}.hb"


def holds_key(owner: str) -> str:
    return f"swarmd-owner.{owner}.holds"


def claim_key(owner: str) -> str:
    return f"swarmd-owner.{owner}.claim"


def reaped_key(owner: str) -> str:
    return f"swarmd-owner.{owner}.reaped"


# -- records -------------------------------------------------------------------
class Heartbeat(BaseModel):
    owner: str
    pod: str
    pid: int | None = None
    pid_start: int | None = None
    pid_ns: str | None = None
    seq: int = 0
    at: float = Field(default_factory=time.time)
    fenced_by: str | None = None
    fenced_reason: str | None = None


class LockRef(BaseModel):
    store: str
    resource: str
    expiry_s: int
    at: float = Field(default_factory=time.time)

    @property
    def ref(self) -> str:
        return f"{self.store}/{self.resource}"


class Holdings(BaseModel):
    owner: str
    pod: str
    locks: dict[str, LockRef] = Field(default_factory=dict)  # "<store>/<resource>" -> ref
    markers: list[str] = Field(default_factory=list)
    rev: int = 0


class IndexEntry(BaseModel):
    pod: str
    pid: int | None = None
    pid_start: int | None = None
    pid_ns: str | None = None
    since: float = Field(default_factory=time.time)


class Claim(BaseModel):
    """A watchdog is reaping this owner (create-only, with a TTL)."""

    by: str
    reason: str
    at: float = Field(default_factory=time.time)


class Reclaimed(BaseModel):
    """What a watchdog reclaimed from a dead owner (kept RECORD_TTL_S)."""

    owner: str
    pod: str | None = None
    by: str
    reason: str
    died_at: float
    started_at: float
    finished_at: float = 0.0
    released: dict[str, float] = Field(default_factory=dict)  # "<store>/<resource>" -> when
    not_held: dict[str, str] = Field(default_factory=dict)  # ref -> why (expired, retaken)
    markers_deleted: list[str] = Field(default_factory=list)
    markers_skipped: list[str] = Field(default_factory=list)


class OwnerIndex(BaseModel):
    owners: dict[str, IndexEntry] = Field(default_factory=dict)


# -- process identity ----------------------------------------------------------
def pid_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None: no such process)."""
    try:
        raw = open(f"/proc/{pid}/stat", "rb").read().decode(errors="replace")  # noqa: SIM115
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


def pid_state(pid: int) -> str | None:
    try:
        raw = open(f"/proc/{pid}/stat", "rb").read().decode(errors="replace")  # noqa: SIM115
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0] if fields else None


def pid_namespace(pid: int | str = "self") -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def pod_name() -> str:
    """The pod (Kubernetes) or the stand-in the local launcher sets; else the hostname."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def new_owner_id(pod: str) -> str:
    return f"{pod}:{uuid.uuid4().hex[:16]}"


# -- index ---------------------------------------------------------------------
async def read_index(sc: DaprClient) -> OwnerIndex:
    item = await sc.get(INDEX_KEY)
    return OwnerIndex.model_validate(item.value) if item.value else OwnerIndex()


async def update_index(
    sc: DaprClient, change: Callable[[OwnerIndex], bool], attempts: int = 50
) -> OwnerIndex:
    """Apply ``change`` (returns False for "nothing to do") by ETag compare-and-set."""
    seen = OwnerIndex()

    def apply(raw: Any) -> OwnerIndex | None:
        nonlocal seen
        seen = OwnerIndex.model_validate(raw) if raw else OwnerIndex()
        return seen if change(seen) else None

    await sc.update(
        INDEX_KEY,
        apply,
        dump=lambda index: index.model_dump(mode="json"),
        attempts=attempts,
        what="owner index",
    )
    return seen


# -- the app's side ------------------------------------------------------------
class OwnerRegistry:
    """This process's owner incarnation: heartbeat, holdings, index entry.

    Runs on its own thread and event loop, so the heartbeat keeps its pace
    whatever the API's or the workflow worker's loop is doing, and so holdings
    updates from any loop are serialized in one place. Public coroutines may
    be awaited from any event loop.
    """

    def __init__(
        self,
        sidecar: DaprClient,
        *,
        pod: str | None = None,
        heartbeat_s: float = 0.5,
        ttl_s: int = 4,
    ) -> None:
        if ttl_s < 2 or heartbeat_s * 2 > ttl_s - 1:
            raise ValueError("owner TTL must be >= 2 s and leave room for two heartbeats")
        self.sc = sidecar
        self.pod = pod or pod_name()
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        # The store counts TTLs from whole seconds (SQLite CURRENT_TIMESTAMP), so a
        # record written at t may be gone at t + ttl - 1: the lease must end before.
        self.lease_s = ttl_s - 1.25
        self.owner = new_owner_id(self.pod)
        self.generation = 0
        self._holdings = Holdings(owner=self.owner, pod=self.pod)
        self._version = 0
        self._flushed = 0
        self._lease_until = 0.0
        self._seq = 0
        self._on_lost: list[Callable[[str, str], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._write_lock: asyncio.Lock | None = None
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        caller = asyncio.get_running_loop()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._write_lock = asyncio.Lock()

            async def boot() -> None:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        await self._register()
                        break
                    except DependencyUnavailable as exc:  # the state store may lag daprd
                        if time.monotonic() > deadline:
                            caller.call_soon_threadsafe(_set_exc, ready, exc)
                            return
                        log.warning(
                            "owner registration failed; retrying", extra={"error": str(exc)}
                        )
                        self.owner = new_owner_id(self.pod)
                        await asyncio.sleep(0.5)
                    except BaseException as exc:
                        caller.call_soon_threadsafe(_set_exc, ready, exc)
                        return
                self._beat_task = asyncio.create_task(self._beat_forever())
                caller.call_soon_threadsafe(_set_result, ready)

            boot_task = loop.create_task(boot())
            loop.run_forever()
            boot_task.cancel()
            loop.run_until_complete(self.sc.close_loop())
            loop.close()

        self._thread = threading.Thread(target=run, name="swarmd-owner", daemon=True)
        self._thread.start()
        await ready

    async def stop(self) -> None:
        """Clean shutdown: stop beating, drop holdings and heartbeat, leave the index.
        (Release locks first: :meth:`swarmd.engine.locks.LockManager.release_all`.)"""
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            await self._call(self._deregister)
        loop, self._loop = self._loop, None
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)

    def on_lost(self, callback: Callable[[str, str], None]) -> None:
        """``callback(old_owner, why)`` runs (on the registry thread) when the lease is lost."""
        self._on_lost.append(callback)

    def lease_valid(self) -> bool:
        return time.monotonic() < self._lease_until

    # -- holdings (any loop) -----------------------------------------------------
    async def record_lock(self, owner: str, store: str, resource: str, expiry_s: int) -> None:
        ref = LockRef(store=store, resource=resource, expiry_s=expiry_s)
        await self._call(self._mutate, owner, lambda h: h.locks.__setitem__(ref.ref, ref), True)

    async def forget_lock(self, owner: str, store: str, resource: str) -> None:
        await self._call(
            self._mutate, owner, lambda h: h.locks.pop(f"{store}/{resource}", None), False
        )

    async def record_marker(self, owner: str, key: str) -> None:
        def add(h: Holdings) -> None:
            if key not in h.markers:
                h.markers.append(key)

        await self._call(self._mutate, owner, add, True)

    async def forget_marker(self, owner: str, key: str) -> None:
        def drop(h: Holdings) -> None:
            if key in h.markers:
                h.markers.remove(key)

        await self._call(self._mutate, owner, drop, False)

    # -- internals (registry loop) -------------------------------------------------
    async def _call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        loop = self._loop
        if loop is None:
            raise DependencyUnavailable("owner registry not running")
        if asyncio.get_running_loop() is loop:
            return await fn(*args)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(*args), loop))

    async def _mutate(self, owner: str, change: Callable[[Holdings], Any], adding: bool) -> None:
        if owner != self.owner:
            if adding:  # never take anything more under a lost incarnation
                raise LeaseLost(f"owner {owner} lost its lease; now {self.owner}")
            return  # an earlier incarnation's bookkeeping: its holdings are the watchdog's now
        change(self._holdings)
        self._version += 1
        await self._flush(self._version)

    async def _flush(self, version: int) -> None:
        assert self._write_lock is not None
        async with self._write_lock:
            if self._flushed >= version:
                return  # a later write already carried this change
            self._holdings.rev = self._version
            snap, v = self._holdings.model_dump(mode="json"), self._version
            await self.sc.save(holds_key(snap["owner"]), snap)
            self._flushed = v

    def _heartbeat(self) -> Heartbeat:
        self._seq += 1
        pid = os.getpid()
        return Heartbeat(
            owner=self.owner,
            pod=self.pod,
            pid=pid,
            pid_start=pid_start_time(pid),
            pid_ns=pid_namespace(),
            seq=self._seq,
        )

    async def _register(self) -> None:
        sent = time.monotonic()
        hb = self._heartbeat()
        if not await self.sc.save(
            hb_key(self.owner), hb.model_dump(mode="json"), first_write=True, ttl_s=self.ttl_s
        ):
            raise DependencyUnavailable(f"owner id {self.owner} already taken")
        self._lease_until = sent + self.lease_s
        self._holdings = Holdings(owner=self.owner, pod=self.pod)
        self._version = self._flushed = 0
        await self.sc.save(holds_key(self.owner), self._holdings.model_dump(mode="json"))
        entry = IndexEntry(pod=self.pod, pid=hb.pid, pid_start=hb.pid_start, pid_ns=hb.pid_ns)

        def add(index: OwnerIndex) -> bool:
            index.owners[self.owner] = entry
            return True

        await update_index(self.sc, add)
        log.info(
            "owner registered",
            extra={"owner": self.owner, "pod": self.pod, "pid": hb.pid, "ttl_s": self.ttl_s},
        )

    async def _deregister(self) -> None:
        self._stopping = True
        if self._beat_task is not None:
            self._beat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat_task
        owner = self.owner
        if self._holdings.locks or self._holdings.markers:
            # still holding something: leave it to the watchdog, which reclaims by owner id
            log.warning("owner stopping with holdings; the watchdog will reclaim them")
            return
        await self.sc.delete(holds_key(owner))
        await self.sc.delete(hb_key(owner))

        def drop(index: OwnerIndex) -> bool:
            return index.owners.pop(owner, None) is not None

        await update_index(self.sc, drop)
        log.info("owner deregistered", extra={"owner": owner})

    async def _beat_once(self) -> None:
        sent = time.monotonic()
        key = hb_key(self.owner)
        for _ in range(3):
            item = await self.sc.get(key)
            if item.value is not None and item.value.get("fenced_by"):
                await self._lost(f"fenced by {item.value['fenced_by']}")
                return
            ok = await self.sc.save(
                key,
                self._heartbeat().model_dump(mode="json"),
                etag=item.etag,
                first_write=True,
                ttl_s=self.ttl_s,
            )
            if ok:
                self._lease_until = sent + self.lease_s
                return
        # three ETag races in a row: only a fence write races us; the next beat reads it

    async def _beat_forever(self) -> None:
        while not self._stopping:
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(self._beat_once(), timeout=self.lease_s)
            except (DependencyUnavailable, TimeoutError) as exc:
                log.warning("heartbeat failed", extra={"owner": self.owner, "error": str(exc)})
            if not self._stopping and not self.lease_valid():
                await self._lost("lease expired: no heartbeat within the owner TTL")
            await asyncio.sleep(max(0.0, self.heartbeat_s - (time.monotonic() - t0)))

    async def _lost(self, why: str) -> None:
        """The lease is gone: every lock of this incarnation may be reclaimed by now.
        Tell the lock manager, then start over as a new incarnation."""
        old = self.owner
        log.error("owner lease lost", extra={"owner": old, "why": why})
        for cb in self._on_lost:
            try:
                cb(old, why)
            except Exception:
                log.exception("lease-lost callback failed")
        self.owner = new_owner_id(self.pod)
        self.generation += 1
        while not self._stopping:
            try:
                await self._register()
                return
            except DependencyUnavailable as exc:
                log.warning("re-register failed", extra={"error": str(exc)})
                await asyncio.sleep(self.heartbeat_s)


def _set_result(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _set_exc(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
