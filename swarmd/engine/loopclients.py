"""One ``httpx.AsyncClient`` per event loop.

The app runs two loops: uvicorn's (the API) and the workflow worker's (async
activities). An httpx client's connection pool belongs to the loop that made
its connections, so each component that talks to the sidecar keeps one client
per loop through this.

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
from collections.abc import AsyncIterator

import httpx

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


class LoopClients:
    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._clients: dict[int, httpx.AsyncClient] = {}

    def get(self) -> httpx.AsyncClient:
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            client = self._clients[loop_id] = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s, pool=None), transport=GatedTransport()
            )
        return client

    async def aclose_current(self) -> None:
        """Close the running loop's client (a loop that is about to end)."""
        client = self._clients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        for client in list(self._clients.values()):
            with contextlib.suppress(RuntimeError):  # made on another, already closed loop
                await client.aclose()
        self._clients.clear()
