"""The one client for the Dapr building blocks swarmd calls over daprd's HTTP port.

State (values, ETags, first-write concurrency, TTLs, transactions) and the
distributed lock API (alpha). One instance per process, shared by the API, the
activities, the owner registry, the lock manager, the run tracker and the
watchdog; it keeps one ``aiohttp`` session per event loop (:mod:`loopclients`),
since the API's loop and the workflow worker's loop both call it.

**The one error map** (:func:`failure`), from the sidecar's answers to our tree:

* transport errors (daprd down, timeouts) and 5xx (the store behind it is
  down) -> :class:`~swarmd.errors.DependencyUnavailable`: HTTP 503 at the API;
  inside an activity the engine retries it (it is not in
  ``swarmd.engine.retry.NON_RETRYABLE``);
* 4xx on a state call -> :class:`~swarmd.errors.NonRetryableActivityError`: we
  sent a malformed request (a key holding ``||``, say), retrying cannot help;
* an ETag mismatch is not an error: conditional writes return ``False``.

Dapr's HTTP lock API::

    POST /v1.0-alpha1/lock/{store}    {"resourceId","lockOwner","expiryInSeconds"} -> {"success"}
    POST /v1.0-alpha1/unlock/{store}  {"resourceId","lockOwner"} -> {"status": 0|1|2|3}
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from swarmd.engine.loopclients import LoopSessions, Reply
from swarmd.errors import DependencyUnavailable, NonRetryableActivityError, SwarmdError

T = TypeVar("T")

#: items per transaction in :meth:`DaprClient.put_many` (the smallest limit of a Dapr
#: store that caps a transaction's operations: DynamoDB and Cosmos DB, 100)
PUT_MANY_CHUNK = 100


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


@dataclass(frozen=True)
class Op:
    """One operation of :meth:`DaprClient.transact_ops`: an upsert (``delete=False``) or
    a delete of ``key``. With ``etag`` the operation (and so the whole transaction) only
    succeeds if the key still has that ETag (a deleted key never matches); with
    ``create`` an upsert only succeeds if the key does not exist yet."""

    key: str
    value: Any = None
    etag: str | None = None
    create: bool = False
    delete: bool = False
    ttl_s: int | None = None


def failure(what: str, r: Reply, *, state: bool = True) -> SwarmdError:
    """The sidecar refused ``what``: our error for its answer (see the module docstring)."""
    msg = f"{what}: {r.status_code} {r.text[:200]}"
    if state and 400 <= r.status_code < 500:
        return NonRetryableActivityError(msg)
    return DependencyUnavailable(msg)


class DaprClient:
    """State and lock calls to one daprd (``127.0.0.1:<http port>``)."""

    def __init__(self, http_port: int, state_store: str, timeout_s: float = 10.0) -> None:
        self.base = f"http://127.0.0.1:{http_port}"
        self.state_store = state_store
        self.timeout_s = timeout_s
        self._clients = LoopSessions(self.timeout_s)

    async def _request(self, method: str, path: str, **kw: Any) -> Reply:
        try:
            return await self._clients.request(method, self.base + path, **kw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DependencyUnavailable(
                f"Dapr sidecar unreachable at {self.base}: {exc!r}"
            ) from exc

    def _state_path(self, key: str | None = None) -> str:
        p = "/v1.0/state/" + quote(self.state_store, safe="")
        return p if key is None else p + "/" + quote(key, safe="")

    # -- state ---------------------------------------------------------------
    async def get(self, key: str) -> Item:
        r = await self._request("GET", self._state_path(key))
        if r.status_code == 204 or (r.status_code == 200 and not r.content):
            return Item(None, None)
        if r.status_code >= 300:
            raise failure(f"state get {key!r}", r)
        return Item(r.json(), r.headers.get("etag"))

    async def get_many(self, keys: list[str]) -> dict[str, Any]:
        """Values of ``keys`` in one bulk request (absent keys are left out)."""
        r = await self._request(
            "POST", self._state_path() + "/bulk", json={"keys": keys, "parallelism": 8}
        )
        if r.status_code >= 300:
            raise failure("state bulk get", r)
        out: dict[str, Any] = {}
        for item in r.json() or []:
            if item.get("error"):
                raise DependencyUnavailable(f"state bulk get {item.get('key')!r}: {item['error']}")
            if item.get("data") is not None:
                out[str(item["key"])] = item["data"]
        return out

    async def get_items(self, keys: list[str]) -> dict[str, Item]:
        """Every key of ``keys`` with its value and ETag, in one bulk request."""
        r = await self._request("POST", self._state_path() + "/bulk", json={"keys": keys})
        if r.status_code >= 300:
            raise failure("state bulk get", r)
        out = {k: Item(None, None) for k in keys}
        for item in r.json() or []:
            if item.get("error"):
                raise DependencyUnavailable(f"state get {item.get('key')!r}: {item['error']}")
            if item.get("data") is not None:
                out[str(item["key"])] = Item(item["data"], item.get("etag"))
        return out

    async def get_value(self, key: str) -> Any | None:
        """The value of ``key``, or None."""
        return (await self.get(key)).value

    async def get_text(self, key: str) -> str | None:
        v = await self.get_value(key)
        return v if isinstance(v, str) or v is None else json.dumps(v)

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
        raise failure(f"state save {key!r}", r)

    async def put(self, key: str, value: Any, ttl_s: int | None = None) -> None:
        """Save ``value`` unconditionally (last write wins)."""
        await self.save(key, value, ttl_s=ttl_s)

    async def put_many(self, items: list[tuple[str, Any, int | None]]) -> None:
        """Save ``(key, value, ttl_s)`` items, last write wins, in one state transaction
        per :data:`PUT_MANY_CHUNK` items.

        Not Dapr's bulk save: the state API runs that as one write per key in parallel,
        and a SQLite store turns 50 parallel writes into 50 write transactions that
        queue on its one write lock, each blocked writer sleeping in SQLite's busy
        handler (up to 100 ms a turn). A transaction is one lock and one commit."""
        for i in range(0, len(items), PUT_MANY_CHUNK):
            chunk = items[i : i + PUT_MANY_CHUNK]
            body = {"operations": [_operation(Op(k, v, ttl_s=t)) for k, v, t in chunk]}
            r = await self._request("POST", self._state_path() + "/transaction", json=body)
            if r.status_code >= 300:
                raise failure(f"state save of {len(chunk)} keys", r)

    async def put_text(self, key: str, value: str, ttl_s: int) -> None:
        await self.put(key, value, ttl_s)

    async def delete(self, key: str, *, etag: str | None = None) -> bool:
        """Delete ``key`` (only if its ETag still matches, when given). False on mismatch."""
        headers = {"If-Match": etag} if etag is not None else {}
        params = {"concurrency": "first-write"} if etag is not None else {}
        r = await self._request("DELETE", self._state_path(key), headers=headers, params=params)
        if r.status_code < 300:
            return True
        if _etag_conflict(r):
            return False
        raise failure(f"state delete {key!r}", r)

    async def transact(self, upserts: list[tuple[str, Any, str | None]]) -> bool:
        """Upsert ``(key, value, etag)`` atomically; an ETag of None means the key must
        not exist yet. False when another writer got there first."""
        return await self.transact_ops(
            [Op(key, value, etag=etag, create=etag is None) for key, value, etag in upserts]
        )

    async def transact_ops(self, ops: list[Op]) -> bool:
        """Apply ``ops`` atomically. False (nothing applied) if an ETag did not match."""
        body = {"operations": [_operation(op) for op in ops]}
        r = await self._request("POST", self._state_path() + "/transaction", json=body)
        if r.status_code < 300:
            return True
        # a transaction's ETag mismatch can also come back as a 5xx naming the ETag
        if _etag_conflict(r) or r.status_code == 412 or "etag" in r.text.lower():
            return False
        raise failure("state transaction", r)

    async def update(
        self,
        key: str,
        change: Callable[[Any | None], T | None],
        *,
        dump: Callable[[T], Any] = lambda v: v,
        ttl_of: Callable[[T], int | None] = lambda v: None,
        attempts: int = 50,
        what: str | None = None,
    ) -> T | None:
        """Read-modify-write of one key by ETag compare-and-set.

        ``change(current_value)`` returns the new value, or None for "nothing to do";
        it may run several times (once per lost race) and must not have side effects.
        Returns what was written (or None). ``dump`` turns it into JSON for the store,
        ``ttl_of`` gives its TTL (None: none).
        Raises :class:`DependencyUnavailable` after ``attempts`` lost races in a row.
        """
        for attempt in range(attempts):
            item = await self.get(key)
            new = change(item.value)
            if new is None:
                return None
            ttl = ttl_of(new)
            if item.etag is None:
                ok = await self.save(key, dump(new), first_write=True, ttl_s=ttl)
            else:
                ok = await self.save(key, dump(new), etag=item.etag, ttl_s=ttl)
            if ok:
                return new
            await asyncio.sleep(random.uniform(0.005, min(0.02 * (attempt + 1), 0.1)))
        raise DependencyUnavailable(f"{what or key}: too many concurrent updates")

    # -- workflows -----------------------------------------------------------
    async def workflow_status(self, instance_id: str) -> str | None:
        """A workflow instance's runtime status (``RUNNING``, ``SUSPENDED``,
        ``TERMINATED``, ...), None when daprd knows no such instance."""
        r = await self._request("GET", "/v1.0/workflows/dapr/" + quote(instance_id, safe=""))
        if r.status_code >= 300:
            raise failure(f"workflow status of {instance_id!r}", r, state=False)
        status = (r.json() or {}).get("runtimeStatus")
        return str(status) if status else None

    # -- locks ---------------------------------------------------------------
    async def try_lock(self, store: str, resource: str, owner: str, expiry_s: int) -> bool:
        r = await self._request(
            "POST",
            "/v1.0-alpha1/lock/" + quote(store, safe=""),
            json={"resourceId": resource, "lockOwner": owner, "expiryInSeconds": int(expiry_s)},
        )
        if r.status_code >= 300:
            raise failure(f"try-lock {resource!r}", r, state=False)
        return bool(r.json().get("success", False))

    async def unlock(self, store: str, resource: str, owner: str) -> UnlockStatus:
        r = await self._request(
            "POST",
            "/v1.0-alpha1/unlock/" + quote(store, safe=""),
            json={"resourceId": resource, "lockOwner": owner},
        )
        if r.status_code >= 300:
            raise failure(f"unlock {resource!r}", r, state=False)
        status = UnlockStatus(int(r.json().get("status", 0)))
        if status is UnlockStatus.INTERNAL_ERROR:
            raise DependencyUnavailable(f"unlock {resource!r}: lock store internal error")
        return status

    async def close_loop(self) -> None:
        """Close the connections of the running event loop only (that loop is ending)."""
        await self._clients.aclose_current()

    async def close(self) -> None:
        await self._clients.aclose()


def _etag_conflict(r: Reply) -> bool:
    """daprd answers an ETag mismatch with 409 (and some stores with 400 + ERR_STATE_*ETAG)."""
    if r.status_code == 409:
        return True
    if r.status_code == 400:
        with contextlib.suppress(ValueError):
            body = r.json()
            text = json.dumps(body).lower()
            return "etag" in text
    return False


def _operation(op: Op) -> dict[str, Any]:
    req: dict[str, Any] = {"key": op.key}
    if not op.delete:
        req["value"] = op.value
    if op.etag is not None:
        req["etag"] = op.etag
    if op.etag is not None or op.create:
        req["options"] = {"concurrency": "first-write"}
    if op.ttl_s:
        req["metadata"] = {"ttlInSeconds": str(int(op.ttl_s))}
    return {"operation": "delete" if op.delete else "upsert", "request": req}
