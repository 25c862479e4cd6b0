"""Access to the Dapr state store through the sidecar's HTTP state API.

Used for agent memory, mid-step checkpoints and large payloads. One client
per event loop: activities run on the workflow worker's own loop.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from swarmd.config import Settings
from swarmd.engine.loopclients import LoopClients
from swarmd.errors import NonRetryableActivityError, RetryableActivityError


def _failure(what: str, r: httpx.Response) -> Exception:
    """4xx is our mistake (a malformed key): retrying cannot help. 5xx may pass."""
    msg = f"{what} failed: {r.status_code} {r.text[:500]}"
    if 400 <= r.status_code < 500:
        return NonRetryableActivityError(msg)
    return RetryableActivityError(msg)


class StateStore:
    def __init__(self, settings: Settings, store: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{settings.dapr_http_port}/v1.0/state/" + quote(
            store or settings.state_store
        )
        self._clients = LoopClients(10)

    def _client(self) -> httpx.AsyncClient:
        return self._clients.get()

    async def get(self, key: str) -> Any | None:
        try:
            r = await self._client().get(f"{self.base}/{quote(key, safe='')}")
        except httpx.HTTPError as exc:
            raise RetryableActivityError(f"state store unreachable: {exc}") from exc
        if r.status_code == 204 or not r.content:
            return None
        if r.status_code >= 300:
            raise _failure(f"state get {key!r}", r)
        return r.json()

    async def put(self, key: str, value: Any, ttl_s: int | None = None) -> None:
        item: dict[str, Any] = {"key": key, "value": value}
        if ttl_s:
            item["metadata"] = {"ttlInSeconds": str(ttl_s)}
        try:
            r = await self._client().post(self.base, json=[item])
        except httpx.HTTPError as exc:
            raise RetryableActivityError(f"state store unreachable: {exc}") from exc
        if r.status_code >= 300:
            raise _failure(f"state save {key!r}", r)

    async def delete(self, key: str) -> None:
        try:
            r = await self._client().delete(f"{self.base}/{quote(key, safe='')}")
        except httpx.HTTPError as exc:
            raise RetryableActivityError(f"state store unreachable: {exc}") from exc
        if r.status_code >= 300:
            raise _failure(f"state delete {key!r}", r)

    async def get_text(self, key: str) -> str | None:
        v = await self.get(key)
        return v if isinstance(v, str) or v is None else json.dumps(v)

    async def put_text(self, key: str, value: str, ttl_s: int) -> None:
        await self.put(key, value, ttl_s)

    async def close(self) -> None:
        await self._clients.aclose()
