"""A per-run index of the state-store keys a run wrote, so purging it can delete them.

Dapr's state API cannot list keys, so anything a run stores under keys of its
own (the call journal, large payloads) is recorded here as well, and
:meth:`RunKeys.delete_all` deletes every recorded key and then the index.

Invariants:

* Keys are recorded **before or together with** the values they name being
  relied on: a crash between the two leaves at worst an indexed key with no
  value (deleting it is a no-op) or a value that expires by its TTL, never a
  value that purge cannot find and that lives forever.
* The index is split over ``SHARDS`` keys (``runkeys|<run>|<n>``); each call of
  :meth:`add` goes to one shard, picked by a hash of its first key, so a group
  recording its 50 keys costs one compare-and-set and concurrent writers of one
  run (many groups at once) rarely contend.
* Recording a key twice is harmless (shards are sets).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from typing import Any

from swarmd.engine.dapr import DaprClient

SHARDS = 16


def _shard(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:2], "big") % SHARDS


def shard_key(run_id: str, n: int) -> str:
    return f"runkeys|{run_id}|{n}"


class RunKeys:
    def __init__(self, sidecar: DaprClient, ttl_s: int | None = None) -> None:
        self.sc = sidecar
        self.ttl_s = ttl_s

    async def add(self, run_id: str, keys: Iterable[str]) -> None:
        """Record ``keys`` as belonging to run ``run_id``."""
        batch = set(keys)
        if batch:  # one shard per call (by its first key): one compare-and-set per group
            await self._add(run_id, _shard(min(batch)), batch)

    async def _add(self, run_id: str, n: int, keys: set[str]) -> None:
        def merged(value: Any) -> list[str] | None:
            have = set(value) if isinstance(value, list) else set()
            return None if keys <= have else sorted(have | keys)

        await self.sc.update(
            shard_key(run_id, n),
            merged,
            ttl_of=lambda _: self.ttl_s,
            what=f"keys of run {run_id!r}",
        )

    async def keys(self, run_id: str) -> list[str]:
        """Every key recorded for ``run_id``."""
        items = await asyncio.gather(*(self.sc.get(shard_key(run_id, n)) for n in range(SHARDS)))
        out: list[str] = []
        for it in items:
            if isinstance(it.value, list):
                out.extend(str(k) for k in it.value)
        return sorted(out)

    async def delete_all(self, run_id: str) -> int:
        """Delete every recorded key of ``run_id``, then the index; how many keys."""
        keys = await self.keys(run_id)
        sem = asyncio.Semaphore(32)

        async def drop(k: str) -> None:
            async with sem:
                await self.sc.delete(k)

        await asyncio.gather(*(drop(k) for k in keys))
        await asyncio.gather(*(self.sc.delete(shard_key(run_id, n)) for n in range(SHARDS)))
        return len(keys)
