"""Exclusive locks on shared resources, through Dapr's distributed lock API.

::

    async with locks.hold(f"memory.{key}", ttl_s=30, wait_s=10):
        ...  # read-modify-write that must not interleave with another writer

The owner is this process's incarnation (``<pod>:<per-start id>``, see
:mod:`swarmd.engine.registry`), never a bare pod name. Every lock is recorded
in the owner registry before it is taken and forgotten after it is released,
so when the process is SIGKILLed or OOM-killed the watchdog releases exactly
what it held. Dapr locks are not re-entrant and cannot be renewed: pick a TTL
longer than the work; the TTL only matters if both the process and the
watchdog die.

A hold may also own a *state marker* (for example "user X has an active
turn"): a state record that says who holds it; it is deleted on release, and by
the watchdog when the owner dies.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from swarmd.engine.dapr import DaprClient, UnlockStatus
from swarmd.engine.registry import OwnerRegistry
from swarmd.errors import LeaseLost, LockBusy, ValidationFailed

log = logging.getLogger("swarmd.locks")

#: Lock resource ids and marker keys: no '||' (Dapr's key separator), bounded length.
RESOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,199}$")
MAX_TTL_S = 24 * 3600


@dataclass
class Hold:
    store: str
    resource: str
    owner: str
    ttl_s: int
    taken_at: float = field(default_factory=time.time)
    marker: str | None = None
    lost: bool = False

    @property
    def expires_at(self) -> float:
        return self.taken_at + self.ttl_s

    def view(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "store": self.store,
            "owner": self.owner,
            "ttl_s": self.ttl_s,
            "taken_at": self.taken_at,
            "expires_at": self.expires_at,
            "marker": self.marker,
            "lost": self.lost,
        }


def check_resource(resource: str, field_name: str = "resource") -> str:
    if not RESOURCE_RE.match(resource):
        raise ValidationFailed(
            f"{field_name}: 1-200 characters of letters, digits and _ . : @ -, starting with a "
            "letter or digit",
            field=field_name,
        )
    return resource


class LockManager:
    """Takes and releases locks for this process's owner incarnation."""

    def __init__(self, sidecar: DaprClient, registry: OwnerRegistry, store: str) -> None:
        self.sc = sidecar
        self.registry = registry
        self.store = store
        self._mu = threading.Lock()  # callers live on several event loops
        self._held: dict[str, Hold] = {}
        self._pending: set[str] = set()
        registry.on_lost(self._lease_lost)

    @property
    def owner(self) -> str:
        return self.registry.owner

    def held(self) -> list[Hold]:
        with self._mu:
            return list(self._held.values())

    def get(self, resource: str) -> Hold | None:
        with self._mu:
            return self._held.get(resource)

    async def acquire(
        self,
        resource: str,
        ttl_s: int,
        *,
        wait_s: float = 0.0,
        marker: str | None = None,
        marker_value: dict[str, Any] | None = None,
    ) -> Hold:
        """Take ``resource`` for ``ttl_s`` seconds, retrying for up to ``wait_s``.

        Raises :class:`LockBusy` if another owner (or this process) holds it.
        """
        check_resource(resource)
        if marker is not None:
            check_resource(marker, "marker")
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise ValidationFailed(f"ttl_s: between 1 and {MAX_TTL_S}", field="ttl_s")
        deadline = time.monotonic() + wait_s
        delay = 0.01
        while True:  # another task of this process has it: wait as for another owner
            with self._mu:
                if resource not in self._held and resource not in self._pending:
                    self._pending.add(resource)
                    break
            if time.monotonic() + delay > deadline:
                raise LockBusy(
                    f"lock {resource!r} is already held by this process", field="resource"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        try:
            left = max(0.0, deadline - time.monotonic())
            return await self._acquire(resource, ttl_s, left, marker, marker_value)
        finally:
            with self._mu:
                self._pending.discard(resource)

    async def _acquire(
        self,
        resource: str,
        ttl_s: int,
        wait_s: float,
        marker: str | None,
        marker_value: dict[str, Any] | None,
    ) -> Hold:
        if not self.registry.lease_valid():
            raise LeaseLost("this process has no owner lease right now (heartbeat failing)")
        owner = self.registry.owner
        await self.registry.record_lock(owner, self.store, resource, ttl_s)  # intent first
        deadline = time.monotonic() + wait_s
        delay = 0.02
        taken = False
        try:
            while True:
                if await self.sc.try_lock(self.store, resource, owner, ttl_s):
                    taken = True
                    break
                if time.monotonic() + delay > deadline:
                    raise LockBusy(f"lock {resource!r} is held by another owner", field="resource")
                await asyncio.sleep(delay)  # Dapr's try-lock does not block: poll with backoff
                delay = min(delay * 2, 0.5)
            hold = Hold(self.store, resource, owner, ttl_s, marker=marker)
            if marker is not None:
                await self.registry.record_marker(owner, marker)
                value = {"owner": owner, "resource": resource, "since": hold.taken_at}
                await self.sc.save(marker, {**(marker_value or {}), **value}, ttl_s=ttl_s)
        except BaseException:
            if taken:
                await self.sc.unlock(self.store, resource, owner)
            await self.registry.forget_lock(owner, self.store, resource)
            if marker is not None:
                await self.registry.forget_marker(owner, marker)
            raise
        with self._mu:
            self._held[resource] = hold
        if owner != self.registry.owner:  # the lease was lost while we were taking it
            hold.lost = True
        log.info("lock taken", extra={"resource": resource, "owner": owner, "ttl_s": ttl_s})
        return hold

    async def release(self, hold: Hold) -> bool:
        """Release ``hold``. True if the lock was still ours (not expired or reclaimed)."""
        with self._mu:
            if self._held.get(hold.resource) is hold:
                del self._held[hold.resource]
        if hold.marker is not None:
            item = await self.sc.get(hold.marker)
            if isinstance(item.value, dict) and item.value.get("owner") == hold.owner:
                await self.sc.delete(hold.marker, etag=item.etag)
        status = await self.sc.unlock(hold.store, hold.resource, hold.owner)
        await self.registry.forget_lock(hold.owner, hold.store, hold.resource)
        if hold.marker is not None:
            await self.registry.forget_marker(hold.owner, hold.marker)
        ok = status is UnlockStatus.SUCCESS
        log.info(
            "lock released" if ok else "lock was no longer ours",
            extra={"resource": hold.resource, "owner": hold.owner, "status": status.name},
        )
        return ok

    async def release_all(self) -> None:
        for hold in self.held():
            try:
                await self.release(hold)
            except Exception:
                log.exception("release failed", extra={"resource": hold.resource})

    @asynccontextmanager
    async def hold(
        self,
        resource: str,
        ttl_s: int,
        *,
        wait_s: float = 0.0,
        marker: str | None = None,
        marker_value: dict[str, Any] | None = None,
    ) -> AsyncIterator[Hold]:
        h = await self.acquire(
            resource, ttl_s, wait_s=wait_s, marker=marker, marker_value=marker_value
        )
        try:
            yield h
        finally:
            await self.release(h)

    def _lease_lost(self, old_owner: str, why: str) -> None:
        with self._mu:
            for h in self._held.values():
                if h.owner == old_owner:
                    h.lost = True
