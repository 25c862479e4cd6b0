"""A value-level view of the Dapr state store, over the one :class:`DaprClient`.

For activities and the user-agent store: ``get`` returns the value itself, and
:meth:`get_many` / :meth:`transact` give ETag-guarded multi-key updates. It has no
HTTP client or error map of its own: every call goes through the process's
:class:`~swarmd.engine.dapr.DaprClient`, so transport errors and 5xx are
``DependencyUnavailable`` (503 at the API, retried in activities) and 4xx is
``NonRetryableActivityError``, as everywhere.
"""

from __future__ import annotations

from typing import Any

from swarmd.engine.dapr import DaprClient, Item, Op

#: a value read with its ETag (``value is None``: no such key)
Entry = Item

__all__ = ["Entry", "Op", "StateStore"]


class StateStore:
    def __init__(self, dapr: DaprClient) -> None:
        self.dapr = dapr

    async def get(self, key: str) -> Any | None:
        return await self.dapr.get_value(key)

    async def put(self, key: str, value: Any, ttl_s: int | None = None) -> None:
        await self.dapr.put(key, value, ttl_s)

    async def put_many(self, items: list[tuple[str, Any, int | None]]) -> None:
        """Save ``(key, value, ttl_s)`` items, last write wins (see
        :meth:`DaprClient.put_many`)."""
        await self.dapr.put_many(items)

    async def delete(self, key: str) -> None:
        await self.dapr.delete(key)

    async def get_many(self, keys: list[str]) -> dict[str, Entry]:
        """Several keys in one round trip (Dapr's bulk get), each with its ETag."""
        return await self.dapr.get_items(keys)

    async def transact(self, ops: list[Op]) -> bool:
        """Apply ``ops`` atomically. False (nothing applied) if an ETag did not match."""
        return await self.dapr.transact_ops(ops)

    async def get_text(self, key: str) -> str | None:
        return await self.dapr.get_text(key)

    async def put_text(self, key: str, value: str, ttl_s: int) -> None:
        await self.dapr.put(key, value, ttl_s)
