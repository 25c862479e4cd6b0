"""One ``httpx.AsyncClient`` per event loop.

The app runs two loops: uvicorn's (the API) and the workflow worker's (async
activities). An httpx client's connection pool belongs to the loop that made
its connections, so each component that talks to the sidecar keeps one client
per loop through this.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx


class LoopClients:
    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._clients: dict[int, httpx.AsyncClient] = {}

    def get(self) -> httpx.AsyncClient:
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            client = self._clients[loop_id] = httpx.AsyncClient(timeout=self.timeout_s)
        return client

    async def aclose(self) -> None:
        for client in list(self._clients.values()):
            with contextlib.suppress(RuntimeError):  # made on another, already closed loop
                await client.aclose()
        self._clients.clear()
