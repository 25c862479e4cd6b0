"""Reaping a dead owner: claim, fence, release its locks, delete its markers, record.

Every step is safe to repeat and to race with another watchdog or with the
owner itself:

1. **claim** ``swarmd-owner.<id>.claim`` create-only with a TTL: one watchdog
   reaps an owner at a time. A watchdog finds its own claim from an earlier
   life (same pod) and carries on; another's claim is retried after its TTL.
2. **fence** the heartbeat record. On a missed heartbeat the fence is
   create-only (fails if the owner beat again: it is alive, stop); on a
   process death (pid + start time in our pid namespace) it replaces the
   heartbeat by ETag compare-and-set. The owner's own heartbeat is an ETag
   compare-and-set too, so a live owner can never un-fence itself; it sees
   the fence at its next beat and gives up everything it held.
3. **release** each lock in the owner's holdings through Dapr's unlock with
   the dead owner's id: compare-and-delete, so a lock that expired and was
   retaken by another owner (or by the restarted process, a new incarnation)
   answers "belongs to others" and stays. Progress is written back after
   each lock, so a watchdog killed mid-reap resumes where it stopped.
4. **markers** are deleted only if they still name the dead owner, and only by
   ETag, so a marker rewritten by a live owner in between survives.
5. **record** ``swarmd-owner.<id>.reaped``, drop the holdings and the index
   entry, release the claim.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from swarmd.engine.dapr import DaprClient, UnlockStatus
from swarmd.engine.registry import (
    RECORD_TTL_S,
    Claim,
    Heartbeat,
    Holdings,
    OwnerIndex,
    Reclaimed,
    claim_key,
    hb_key,
    holds_key,
    reaped_key,
    update_index,
)

log = logging.getLogger("swarmd.watchdog")

PROCESS_EXITED = "process_exited"
HEARTBEAT_EXPIRED = "heartbeat_expired"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.locks_reclaimed = Counter(
            "swarmd_watchdog_locks_reclaimed",
            "Locks of dead owners released by this watchdog",
            registry=r,
        )
        self.locks_not_held = Counter(
            "swarmd_watchdog_locks_not_held",
            "Recorded locks a dead owner no longer held (expired or retaken)",
            ["why"],
            registry=r,
        )
        self.markers_deleted = Counter(
            "swarmd_watchdog_markers_deleted", "Orphaned state markers deleted", registry=r
        )
        self.owners_reaped = Counter(
            "swarmd_watchdog_owners_reaped", "Dead owners reaped", ["reason"], registry=r
        )
        self.reap_skipped = Counter(
            "swarmd_watchdog_reap_skipped",
            "Reaps not done: the owner was alive, or another watchdog had claimed it",
            ["why"],
            registry=r,
        )
        self.reclaim_seconds = Histogram(
            "swarmd_watchdog_reclaim_seconds",
            "From the owner's death (observed or estimated) to its last lock released",
            ["reason"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.sweeps = Counter("swarmd_watchdog_sweeps", "Cluster-wide sweeps done", registry=r)
        self.errors = Counter(
            "swarmd_watchdog_errors", "Failed steps (retried later)", ["step"], registry=r
        )
        self.watched = Gauge(
            "swarmd_watchdog_watched_processes", "App processes watched by pid", registry=r
        )
        self.owners = Gauge(
            "swarmd_watchdog_known_owners", "Owners in the registry index", registry=r
        )


class Reaper:
    def __init__(
        self, sidecar: DaprClient, watchdog_id: str, metrics: Metrics, claim_ttl_s: int = 30
    ) -> None:
        self.sc = sidecar
        self.id = watchdog_id
        self.metrics = metrics
        self.claim_ttl_s = claim_ttl_s
        self.recent: deque[dict[str, Any]] = deque(maxlen=200)
        self._busy: set[str] = set()

    async def reap(self, owner: str, reason: str, died_at: float) -> Reclaimed | None:
        """Reap ``owner`` if it is dead. None when it was alive, claimed by another
        watchdog, or already reaped."""
        if owner in self._busy:
            return None
        self._busy.add(owner)
        try:
            return await self._reap(owner, reason, died_at)
        finally:
            self._busy.discard(owner)

    async def _reap(self, owner: str, reason: str, died_at: float) -> Reclaimed | None:
        definitive = reason == PROCESS_EXITED
        done = await self.sc.get(reaped_key(owner))
        if done.value is not None:
            await self._forget(owner)  # reaped before; tidy what is left
            return None
        if not await self._claim(owner, reason):
            self.metrics.reap_skipped.labels("claimed_by_other").inc()
            return None
        if not await self._fence(owner, reason, definitive):
            self.metrics.reap_skipped.labels("owner_alive").inc()
            log.info("owner is alive; not reaped", extra={"owner": owner, "reason": reason})
            await self.sc.delete(claim_key(owner))
            return None
        return await self._reclaim(owner, reason, died_at)

    async def _claim(self, owner: str, reason: str) -> bool:
        claim = Claim(by=self.id, reason=reason).model_dump(mode="json")
        for _ in range(3):
            if await self.sc.save(
                claim_key(owner), claim, first_write=True, ttl_s=self.claim_ttl_s
            ):
                return True
            item = await self.sc.get(claim_key(owner))
            if item.value is None:
                continue  # expired between the two calls: try again
            # ours, from before this watchdog restarted: carry on; another's: leave it
            return bool(item.value.get("by") == self.id)
        return False

    async def _fence(self, owner: str, reason: str, definitive: bool) -> bool:
        """True when the owner's heartbeat now carries a fence (ours or an earlier one)."""
        for _ in range(10):
            item = await self.sc.get(hb_key(owner))
            hb = item.value if isinstance(item.value, dict) else None
            if hb is not None and hb.get("fenced_by"):
                return True
            if hb is not None and not definitive:
                return False  # it beat again: alive
            fence = Heartbeat(
                owner=owner,
                pod=str((hb or {}).get("pod", "")),
                pid=(hb or {}).get("pid"),
                fenced_by=self.id,
                fenced_reason=reason,
            )
            if await self.sc.save(
                hb_key(owner),
                fence.model_dump(mode="json"),
                etag=item.etag,
                first_write=True,
                ttl_s=RECORD_TTL_S,
            ):
                return True
        return False

    async def _reclaim(self, owner: str, reason: str, died_at: float) -> Reclaimed:
        t0 = time.time()
        item = await self.sc.get(holds_key(owner))
        holds = (
            Holdings.model_validate(item.value)
            if item.value
            else Holdings(owner=owner, pod="", locks={})
        )
        rec = Reclaimed(
            owner=owner,
            pod=holds.pod or None,
            by=self.id,
            reason=reason,
            died_at=died_at,
            started_at=t0,
        )
        for ref_id, ref in list(holds.locks.items()):
            status = await self.sc.unlock(ref.store, ref.resource, owner)
            if status is UnlockStatus.SUCCESS:
                rec.released[ref_id] = time.time()
                self.metrics.locks_reclaimed.inc()
                log.info(
                    "lock reclaimed",
                    extra={"owner": owner, "resource": ref.resource, "store": ref.store},
                )
            else:
                why = (
                    "expired"
                    if status is UnlockStatus.LOCK_DOES_NOT_EXIST
                    else "held_by_other_owner"
                )
                rec.not_held[ref_id] = why
                self.metrics.locks_not_held.labels(why).inc()
            del holds.locks[ref_id]
            await self.sc.save(holds_key(owner), holds.model_dump(mode="json"))  # progress
        for key in list(holds.markers):
            m = await self.sc.get(key)
            if isinstance(m.value, dict) and m.value.get("owner") == owner:
                if await self.sc.delete(key, etag=m.etag):
                    rec.markers_deleted.append(key)
                    self.metrics.markers_deleted.inc()
                else:
                    rec.markers_skipped.append(key)
            elif m.value is not None:
                rec.markers_skipped.append(key)  # rewritten by a live owner since
            holds.markers.remove(key)
            await self.sc.save(holds_key(owner), holds.model_dump(mode="json"))
        rec.finished_at = time.time()
        await self.sc.save(reaped_key(owner), rec.model_dump(mode="json"), ttl_s=RECORD_TTL_S)
        self.metrics.owners_reaped.labels(reason).inc()
        if rec.released:
            self.metrics.reclaim_seconds.labels(reason).observe(
                max(0.0, max(rec.released.values()) - died_at)
            )
        await self._forget(owner)
        view = rec.model_dump(mode="json")
        self.recent.append(view)
        log.info(
            "owner reaped",
            extra={
                "owner": owner,
                "reason": reason,
                "released": sorted(rec.released),
                "not_held": rec.not_held,
                "markers_deleted": rec.markers_deleted,
                "death_to_reclaim_s": round(rec.finished_at - died_at, 3),
            },
        )
        return rec

    async def _forget(self, owner: str) -> None:
        await self.sc.delete(holds_key(owner))

        def drop(index: OwnerIndex) -> bool:
            return index.owners.pop(owner, None) is not None

        await update_index(self.sc, drop)
        await self.sc.delete(claim_key(owner))
