"""The engine's process-level wiring: clients, workflow runtime, workflow client.

Built by the API's lifespan (the entrypoint); owns every long-lived client so
activities never reach for globals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow.aio import DaprWorkflowClient
from openai import AsyncOpenAI

from swarmd.activities.tools import ToolDeps
from swarmd.config import Settings
from swarmd.engine.locks import LockManager
from swarmd.engine.registry import OwnerRegistry
from swarmd.engine.runtime import build_runtime, sdk_logger_options
from swarmd.engine.sidecar import Sidecar
from swarmd.engine.state import StateStore
from swarmd.telemetry import propagate_to_dapr

log = logging.getLogger("swarmd.engine")


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime: WorkflowRuntime | None = None
        self.http: httpx.AsyncClient | None = None
        self.state = StateStore(settings)
        self.registry: OwnerRegistry | None = None
        self.locks: LockManager | None = None

    async def wait_for_sidecar(self, timeout_s: float = 120.0) -> None:
        url = f"http://127.0.0.1:{self.settings.dapr_http_port}/v1.0/healthz/outbound"
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as c:
            while True:
                try:
                    if (await c.get(url)).status_code < 300:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Dapr sidecar not healthy at {url} after {timeout_s}s")
                await asyncio.sleep(0.2)

    async def start(self, app: Any) -> None:
        s = self.settings
        try:
            await self.wait_for_sidecar()
            await self.start_locks(app)
            llm = AsyncOpenAI(
                base_url=s.llm_base_url,
                api_key=s.llm_api_key.get_secret_value(),
                max_retries=0,
                timeout=s.llm_timeout_s,
            )
            self.http = httpx.AsyncClient()
            deps = ToolDeps(
                http=self.http,
                allowed_hosts=frozenset(),
                state_get=self.state.get_text,
                state_put=self.state.put_text,
                lock=self.locks.hold if self.locks is not None else None,
                on_user_key=self.user_key_recorder(),
            )
            # metrics and tracer of the app (swarmd.api.app), when it made them
            obs = getattr(app.state, "llm_observer", None)
            self.runtime = build_runtime(s, llm, deps, self.state, obs)
            await asyncio.to_thread(self.runtime.start)
            app.state.wf_client = DaprWorkflowClient(
                host="127.0.0.1",
                port=str(s.dapr_grpc_port),
                logger_options=sdk_logger_options(s),
            )
            propagate_to_dapr(app.state.wf_client)  # runs' traces continue in daprd
            app.state.engine_ready = True
            log.info("workflow engine ready")
        except Exception:
            log.exception("workflow engine failed to start")
            raise

    def user_key_recorder(self) -> Any:
        """Records memory keys of users with an agent in their key index (deprovisioning)."""
        from swarmd.agents.store import UserStore

        return UserStore(self.state, self.locks.hold).record_user_key if self.locks else None

    async def start_locks(self, app: Any) -> None:
        """Register this process as a lock owner (heartbeat) before it can take a lock."""
        s = self.settings
        self.registry = OwnerRegistry(
            Sidecar(s.dapr_http_port, s.state_store),
            pod=s.pod_name,
            heartbeat_s=s.owner_heartbeat_s,
            ttl_s=s.owner_ttl_s,
        )
        await self.registry.start()
        self.locks = LockManager(
            Sidecar(s.dapr_http_port, s.state_store), self.registry, s.lock_store
        )
        app.state.locks = self.locks

    async def stop(self) -> None:
        if self.runtime is not None:
            await asyncio.to_thread(self.runtime.shutdown)
        if self.locks is not None:
            await self.locks.release_all()
            await self.locks.sc.close()
        if self.registry is not None:
            await self.registry.stop()
        await self.state.close()
