"""One HTTP client per event loop: ``httpx`` (:class:`LoopClients`) or ``aiohttp``
(:class:`LoopSessions`, the sidecar's state and lock calls).

The app runs two loops: uvicorn's (the API) and the workflow worker's (async
activities). A client's connection pool belongs to the loop that made its
connections, so each component that talks to the sidecar keeps one client per
loop through this.

The state calls use aiohttp: per request it spends about half the CPU of
httpx + httpcore on this path (measured with 50 concurrent user agents, where
the sidecar client was over a quarter of the app's samples), and its
connector queues a request beyond its limit on a future, with no re-scan of
the pool.

The pool is small on purpose: httpcore walks every pooled connection (a poll()
per idle one, and a quadratic count of idle ones) each time a request starts or
ends, and with httpx's defaults (100 connections, 20 kept alive) a busy loop
also keeps opening and closing the connections above 20. Measured with 50
concurrent user agents, that walk was a fifth of the app's CPU; 16 connections
to a local sidecar answer far more requests per second than the stack can make.
Requests beyond the pool's size wait on a semaphore (:class:`GatedTransport`)
instead of in httpcore's queue, which it re-scans for every queued request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import aiohttp
import httpx
from multidict import CIMultiDictProxy
from yarl import URL

C = TypeVar("C")

#: connections per loop and per client, all kept alive (see the module docstring); a
#: request waits for a free one without a pool timeout (its own timeout still applies)
POOL = httpx.Limits(max_connections=16, max_keepalive_connections=16)
CONNECTIONS = POOL.max_connections or 16


class _Released(httpx.AsyncByteStream):
    """A response body that frees its gate slot once read (or closed)."""

    def __init__(self, inner: httpx.AsyncByteStream, gate: asyncio.Semaphore) -> None:
        self.inner = inner
        self.gate: asyncio.Semaphore | None = gate

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            if self.gate is not None:
                self.gate.release()
                self.gate = None


class GatedTransport(httpx.AsyncBaseTransport):
    """At most ``CONNECTIONS`` requests in the connection pool at once; the rest wait
    on a semaphore. httpcore re-scans every pooled connection for every request
    queued in it whenever a request starts or ends (a ``poll()`` per idle
    connection): with 50 user agents' turns on one loop that scan was a fifth of the
    app's CPU. Waiting here costs nothing per waiter."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(limits=POOL)
        self.gate = asyncio.Semaphore(CONNECTIONS)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.gate.acquire()
        try:
            resp = await self.inner.handle_async_request(request)
        except BaseException:
            self.gate.release()
            raise
        assert isinstance(resp.stream, httpx.AsyncByteStream)
        resp.stream = _Released(resp.stream, self.gate)
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


class _PerLoop(Generic[C]):
    """One client per event loop, made on the loop's first call (:meth:`_current`)."""

    def __init__(self) -> None:
        self._clients: dict[int, C] = {}

    def _make(self) -> C:
        raise NotImplementedError

    async def _close(self, client: C) -> None:
        raise NotImplementedError

    def _usable(self, client: C) -> bool:
        return True

    def _current(self) -> C:
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None or not self._usable(client):
            client = self._clients[loop_id] = self._make()
        return client

    async def aclose_current(self) -> None:
        """Close the running loop's client (a loop that is about to end)."""
        client = self._clients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await self._close(client)

    async def aclose(self) -> None:
        for client in list(self._clients.values()):
            with contextlib.suppress(RuntimeError):  # made on another, already closed loop
                await self._close(client)
        self._clients.clear()


class LoopClients(_PerLoop[httpx.AsyncClient]):
    def __init__(self, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def get(self) -> httpx.AsyncClient:
        return self._current()

    def _make(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s, pool=None), transport=GatedTransport()
        )

    async def _close(self, client: httpx.AsyncClient) -> None:
        await client.aclose()


class Reply:
    """A sidecar answer, read whole: what :class:`swarmd.engine.dapr.DaprClient` needs of it."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: CIMultiDictProxy[str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class LoopSessions(_PerLoop[aiohttp.ClientSession]):
    """One ``aiohttp`` session per event loop, at most ``CONNECTIONS`` connections each,
    kept alive. Transport failures come out as :class:`aiohttp.ClientError` or
    :class:`TimeoutError`."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        super().__init__()
        # per connect and per read, as httpx's was; no bound on waiting for a free
        # connection (a request's own timeouts still apply once it has one)
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=timeout_s, sock_read=timeout_s
        )

    def _make(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS, force_close=False),
            timeout=self.timeout,
            json_serialize=_dumps,
            auto_decompress=False,
        )

    async def _close(self, session: aiohttp.ClientSession) -> None:
        await session.close()

    def _usable(self, session: aiohttp.ClientSession) -> bool:
        return not session.closed

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        """``url`` is sent as it is: its path is already percent-encoded (state keys)."""
        async with self._current().request(
            method, URL(url, encoded=True), json=json, headers=headers, params=params
        ) as resp:
            return Reply(resp.status, resp.headers, await resp.read())


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
