"""A small typed client for the two Dapr building blocks the lock machinery uses.

State (with ETags, first-write concurrency and TTLs) and the distributed lock
API (alpha), over daprd's HTTP port. Shared by the app's owner registry and
lock manager and by the watchdog. One ``httpx`` client per event loop, since
the app calls it from the API's loop and from the workflow worker's loop.

Dapr's HTTP lock API::

    POST /v1.0-alpha1/lock/{store}    {"resourceId","lockOwner","expiryInSeconds"} -> {"success"}
    POST /v1.0-alpha1/unlock/{store}  {"resourceId","lockOwner"} -> {"status": 0|1|2|3}
"""

from __future__ import annotations

import contextlib
import enum
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from swarmd.engine.loopclients import LoopClients
from swarmd.errors import DependencyUnavailable


class UnlockStatus(enum.IntEnum):
    SUCCESS = 0
    LOCK_DOES_NOT_EXIST = 1
    LOCK_BELONGS_TO_OTHERS = 2
    INTERNAL_ERROR = 3


@dataclass(frozen=True)
class Item:
    """A state value and its ETag (``value is None``: no such key, or expired)."""

    value: Any | None
    etag: str | None


class Sidecar:
    """State and lock calls to one daprd (``127.0.0.1:<http port>``)."""

    def __init__(self, http_port: int, state_store: str, timeout_s: float = 5.0) -> None:
        self.base = f"http://127.0.0.1:{http_port}"
        self.state_store = state_store
        self.timeout_s = timeout_s
        self._clients = LoopClients(self.timeout_s)

    def _client(self) -> httpx.AsyncClient:
        return self._clients.get()

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return await self._client().request(method, self.base + path, **kw)
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"Dapr sidecar unreachable at {self.base}: {exc}") from exc

    def _state_path(self, key: str | None = None) -> str:
        p = "/v1.0/state/" + quote(self.state_store, safe="")
        return p if key is None else p + "/" + quote(key, safe="")

    # -- state ---------------------------------------------------------------
    async def get(self, key: str) -> Item:
        r = await self._request("GET", self._state_path(key))
        if r.status_code == 204 or (r.status_code == 200 and not r.content):
            return Item(None, None)
        if r.status_code >= 300:
            raise DependencyUnavailable(f"state get {key!r}: {r.status_code} {r.text[:200]}")
        return Item(r.json(), r.headers.get("etag"))

    async def get_many(self, keys: list[str]) -> dict[str, Any]:
        """Values of ``keys`` in one bulk request (absent keys are left out)."""
        r = await self._request(
            "POST", self._state_path() + "/bulk", json={"keys": keys, "parallelism": 8}
        )
        if r.status_code >= 300:
            raise DependencyUnavailable(f"state bulk get: {r.status_code} {r.text[:200]}")
        out: dict[str, Any] = {}
        for item in r.json() or []:
            if item.get("error"):
                raise DependencyUnavailable(f"state bulk get {item.get('key')!r}: {item['error']}")
            if item.get("data") is not None:
                out[str(item["key"])] = item["data"]
        return out

    async def save(
        self,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        first_write: bool = False,
        ttl_s: int | None = None,
    ) -> bool:
        """Save ``value``. With ``first_write``: only if the ETag still matches, or (no
        ETag) only if the key does not exist yet. False when that check failed."""
        item: dict[str, Any] = {"key": key, "value": value}
        if etag is not None:
            item["etag"] = etag
        if first_write or etag is not None:
            item["options"] = {"concurrency": "first-write"}
        if ttl_s:
            item["metadata"] = {"ttlInSeconds": str(int(ttl_s))}
        r = await self._request("POST", self._state_path(), json=[item])
        if r.status_code < 300:
            return True
        if _etag_conflict(r):
            return False
        raise DependencyUnavailable(f"state save {key!r}: {r.status_code} {r.text[:200]}")

    async def delete(self, key: str, *, etag: str | None = None) -> bool:
        """Delete ``key`` (only if its ETag still matches, when given). False on mismatch."""
        headers = {"If-Match": etag} if etag is not None else {}
        params = {"concurrency": "first-write"} if etag is not None else {}
        r = await self._request("DELETE", self._state_path(key), headers=headers, params=params)
        if r.status_code < 300:
            return True
        if _etag_conflict(r):
            return False
        raise DependencyUnavailable(f"state delete {key!r}: {r.status_code} {r.text[:200]}")

    async def transact(self, upserts: list[tuple[str, Any, str | None]]) -> bool:
        """Upsert ``(key, value, etag)`` atomically; an ETag of None means the key must
        not exist yet. False when another writer got there first."""
        ops = [
            {
                "operation": "upsert",
                "request": {
                    "key": key,
                    "value": value,
                    **({"etag": etag} if etag is not None else {}),
                    "options": {"concurrency": "first-write"},
                },
            }
            for key, value, etag in upserts
        ]
        r = await self._request(
            "POST", self._state_path() + "/transaction", json={"operations": ops}
        )
        if r.status_code < 300:
            return True
        # a transaction's ETag mismatch can also come back as a 5xx naming the ETag
        if _etag_conflict(r) or r.status_code == 412 or "etag" in r.text.lower():
            return False
        raise DependencyUnavailable(f"state transaction: {r.status_code} {r.text[:200]}")

    # -- locks ---------------------------------------------------------------
    async def try_lock(self, store: str, resource: str, owner: str, expiry_s: int) -> bool:
        r = await self._request(
            "POST",
            "/v1.0-alpha1/lock/" + quote(store, safe=""),
            json={"resourceId": resource, "lockOwner": owner, "expiryInSeconds": int(expiry_s)},
        )
        if r.status_code >= 300:
            raise DependencyUnavailable(f"try-lock {resource!r}: {r.status_code} {r.text[:200]}")
        return bool(r.json().get("success", False))

    async def unlock(self, store: str, resource: str, owner: str) -> UnlockStatus:
        r = await self._request(
            "POST",
            "/v1.0-alpha1/unlock/" + quote(store, safe=""),
            json={"resourceId": resource, "lockOwner": owner},
        )
        if r.status_code >= 300:
            raise DependencyUnavailable(f"unlock {resource!r}: {r.status_code} {r.text[:200]}")
        status = UnlockStatus(int(r.json().get("status", 0)))
        if status is UnlockStatus.INTERNAL_ERROR:
            raise DependencyUnavailable(f"unlock {resource!r}: lock store internal error")
        return status

    async def close(self) -> None:
        await self._clients.aclose()


def _etag_conflict(r: httpx.Response) -> bool:
    """daprd answers an ETag mismatch with 409 (and some stores with 400 + ERR_STATE_*ETAG)."""
    if r.status_code == 409:
        return True
    if r.status_code == 400:
        with contextlib.suppress(ValueError):
            body = r.json()
            text = json.dumps(body).lower()
            return "etag" in text
    return False
