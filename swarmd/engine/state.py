"""Access to the Dapr state store through the sidecar's HTTP state API.

Used for agent memory, mid-step checkpoints and large payloads. One client
per event loop: activities run on the workflow worker's own loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Entry:
    """A value read with its ETag (``value is None``: no such key)."""

    value: Any | None
    etag: str | None


@dataclass(frozen=True)
class Op:
    """One operation of :meth:`StateStore.transact`: an upsert (``delete=False``) or a
    delete of ``key``. With ``etag`` the operation (and so the whole transaction) only
    succeeds if the key still has that ETag (a deleted key never matches); with
    ``create`` an upsert only succeeds if the key does not exist yet."""

    key: str
    value: Any = None
    etag: str | None = None
    create: bool = False
    delete: bool = False
    ttl_s: int | None = None


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

    async def put_many(self, items: list[tuple[str, Any, int | None]]) -> None:
        """Save ``(key, value, ttl_s)`` items in one round trip (not a transaction)."""
        body: list[dict[str, Any]] = []
        for key, value, ttl_s in items:
            item: dict[str, Any] = {"key": key, "value": value}
            if ttl_s:
                item["metadata"] = {"ttlInSeconds": str(ttl_s)}
            body.append(item)
        try:
            r = await self._client().post(self.base, json=body)
        except httpx.HTTPError as exc:
            raise RetryableActivityError(f"state store unreachable: {exc}") from exc
        if r.status_code >= 300:
            raise _failure(f"state save of {len(items)} keys", r)

    async def delete(self, key: str) -> None:
        try:
            r = await self._client().delete(f"{self.base}/{quote(key, safe='')}")
        except httpx.HTTPError as exc:
            raise RetryableActivityError(f"state store unreachable: {exc}") from exc
        if r.status_code >= 300:
            raise _failure(f"state delete {key!r}", r)

    async def get_many(self, keys: list[str]) -> dict[str, Entry]:
        """Several keys in one round trip (Dapr's bulk get), each with its ETag."""
        try:
            r = await self._client().post(f"{self.base}/bulk", json={"keys": keys})
        except httpx.HTTPError as exc:
            raise RetryableActivityError(f"state store unreachable: {exc}") from exc
        if r.status_code >= 300:
            raise _failure("state bulk get", r)
        out = {k: Entry(None, None) for k in keys}
        for item in r.json():
            if item.get("error"):
                raise RetryableActivityError(f"state get {item.get('key')!r}: {item['error']}")
            if "data" in item and item["data"] is not None:
                out[item["key"]] = Entry(item["data"], item.get("etag"))
        return out

    async def transact(self, ops: list[Op]) -> bool:
        """Apply ``ops`` atomically. False (nothing applied) if an ETag did not match."""
        body = {"operations": [_operation(op) for op in ops]}
        try:
            r = await self._client().post(f"{self.base}/transaction", json=body)
        except httpx.HTTPError as exc:
            raise RetryableActivityError(f"state store unreachable: {exc}") from exc
        if r.status_code < 300:
            return True
        # an ETag mismatch comes back as 409, or as 400/500 naming the ETag
        if r.status_code == 409 or "etag" in r.text.lower():
            return False
        raise _failure("state transaction", r)

    async def get_text(self, key: str) -> str | None:
        v = await self.get(key)
        return v if isinstance(v, str) or v is None else json.dumps(v)

    async def put_text(self, key: str, value: str, ttl_s: int) -> None:
        await self.put(key, value, ttl_s)

    async def close(self) -> None:
        await self._clients.aclose()


def _operation(op: Op) -> dict[str, Any]:
    req: dict[str, Any] = {"key": op.key}
    if not op.delete:
        req["value"] = op.value
    if op.etag is not None:
        req["etag"] = op.etag
    if op.etag is not None or op.create:
        req["options"] = {"concurrency": "first-write"}
    if op.ttl_s:
        req["metadata"] = {"ttlInSeconds": str(op.ttl_s)}
    return {"operation": "delete" if op.delete else "upsert", "request": req}
