"""The process's long-lived clients: the API's :class:`Services` and the worker.

:func:`open_services` is entered by the API's lifespan. It builds what needs no
sidecar at once (specs, payload store, run tracker, user-agent configuration)
and, with ``start_worker``, starts the rest in the background: it waits for
the sidecar, registers this process as a lock owner, builds the LLM and HTTP
clients, starts the workflow worker (:func:`swarmd.compose.worker.build_worker`)
and the workflow client, then fills in the ``Services`` fields that need them.
Until then the API answers health checks, and 503 where it needs the sidecar.
On exit everything is stopped in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow.aio import DaprWorkflowClient
from openai import AsyncOpenAI, DefaultAioHttpClient
from opentelemetry.trace import Tracer

from swarmd.activities.llm import LLMObserver
from swarmd.activities.sandbox import Sandbox, SandboxLimits
from swarmd.activities.tools import ToolDeps
from swarmd.agents.config import Baseline, Template, load_baseline, load_templates
from swarmd.agents.fastpath import FastPath
from swarmd.agents.store import UserStore
from swarmd.agents.turn import Answers
from swarmd.agents.wake import Waker
from swarmd.api.deps import Services
from swarmd.compose.grpc_limits import raise_client_limit
from swarmd.compose.worker import build_worker, fast_path_turns, sdk_logger_options
from swarmd.config import Settings
from swarmd.engine.catalog import AgentCatalog, RunCatalog
from swarmd.engine.dapr import DaprClient
from swarmd.engine.history import HistoryReader
from swarmd.engine.live import LiveProgress
from swarmd.engine.locks import LockManager
from swarmd.engine.outbox import Outbox
from swarmd.engine.payloads import PayloadStore
from swarmd.engine.pulse import Pulse, publish_forever
from swarmd.engine.registry import OwnerRegistry
from swarmd.engine.runkeys import RunKeys
from swarmd.engine.spec import SpecRegistry
from swarmd.engine.state import StateStore
from swarmd.engine.supervisor import RunSupervisor
from swarmd.engine.tracker import RunTracker
from swarmd.identity.service import Identity
from swarmd.metrics import Metrics
from swarmd.slack.frontdoor import FrontDoor
from swarmd.telemetry import propagate_to_dapr
from swarmd.workflows.user_agent import WAKE_EVENT

log = logging.getLogger("swarmd.engine")


def llm_client(s: Settings) -> AsyncOpenAI:
    """The gateway's ``openai`` client: no client retries (the proxy and the engine
    retry), the app's call timeout, on aiohttp unless ``SWARMD_LLM_HTTP=httpx``. An
    aiohttp session belongs to one event loop: one client per loop that calls."""
    return AsyncOpenAI(
        base_url=s.llm_base_url,
        api_key=s.llm_api_key.get_secret_value(),
        max_retries=0,
        timeout=s.llm_timeout_s,
        http_client=DefaultAioHttpClient() if s.llm_http == "aiohttp" else None,
    )


async def wait_for_sidecar(settings: Settings, timeout_s: float = 120.0) -> None:
    url = f"http://127.0.0.1:{settings.dapr_http_port}/v1.0/healthz/outbound"
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


class _Worker:
    """The parts that need the sidecar, started in the background, stopped on exit."""

    def __init__(self, settings: Settings, dapr: DaprClient, services: Services) -> None:
        self.settings = settings
        self.dapr = dapr
        self.services = services
        self.obs = LLMObserver(
            services.metrics, services.tracker.tracer, settings.llm_spend_metadata
        )
        self.runtime: WorkflowRuntime | None = None
        self.http: httpx.AsyncClient | None = None
        self.registry: OwnerRegistry | None = None
        self.locks: LockManager | None = None
        #: the calls this process has in flight, by run (for the run supervisor)
        self.pulse = Pulse()
        self._pulse_task: asyncio.Task[None] | None = None
        self.sandbox: Sandbox | None = None
        self.fast_path: FastPath | None = None
        self.waker: Waker | None = None
        #: this process's answers of user turns not stored yet (worker and fast path)
        self.answers = Answers()

    async def start(self) -> None:
        s = self.settings
        try:
            await wait_for_sidecar(s)
            await self._start_locks()
            assert self.locks is not None
            users = UserStore(StateStore(self.dapr), self.locks.hold)
            # the aiohttp session opens on first use, on the workflow worker's loop
            # where every LLM call runs (activities)
            llm = llm_client(s)
            self.http = httpx.AsyncClient()
            self.sandbox = make_sandbox(s)
            self.sandbox.warm_in_background()  # compile or load the interpreter before a call
            deps = ToolDeps(
                http=self.http,
                allowed_hosts=frozenset(s.http_get_allowed_hosts),
                state_get=self.dapr.get_text,
                state_put=self.dapr.put_text,
                lock=self.locks.hold,
                on_user_key=users.record_user_key,  # memory keys go into the user's key index
                sandbox=self.sandbox,
            )
            config = (self.services.agent_baseline, self.services.agent_templates)
            self._pulse_task = asyncio.create_task(
                publish_forever(
                    self.pulse,
                    self.dapr,
                    lambda: self.registry.owner if self.registry is not None else None,
                    s.pulse_interval_s,
                )
            )
            self.runtime = build_worker(
                s,
                llm,
                deps,
                StateStore(self.dapr),
                users,
                config,
                self.obs,
                self.answers,
                self.pulse,
            )
            await asyncio.to_thread(self.runtime.start)
            client = DaprWorkflowClient(
                host="127.0.0.1",
                port=str(s.dapr_grpc_port),
                logger_options=sdk_logger_options(s),
            )
            raise_client_limit(client, s.grpc_max_message_mib)
            propagate_to_dapr(client)  # runs' traces continue in daprd
            self.waker = Waker(client, WAKE_EVENT)
            self.services.waker = self.waker
            if s.user_agent_version == "v3":
                self.fast_path = self._fast_path(self.waker, deps, config)
                self.services.fast_path = self.fast_path
            self.services.users = users
            self.services.workflows = client
            self.services.ready = True
            log.info("workflow engine ready")
        except Exception:
            log.exception("workflow engine failed to start")
            raise

    def _fast_path(
        self,
        waker: Waker,
        deps: ToolDeps,
        config: tuple[Baseline, dict[str, Template]],
    ) -> FastPath:
        """v3's fast path, on the API's loop with its own LLM client (its aiohttp session
        opens on first use, on that loop)."""
        s = self.settings
        llm = llm_client(s)

        turns = fast_path_turns(s, llm, deps, StateStore(self.dapr), config, self.obs, self.answers)
        return FastPath(turns, waker.wake, s.user_agent_linger_s)

    async def _start_locks(self) -> None:
        """Register this process as a lock owner (heartbeat) before it can take a lock."""
        s = self.settings
        self.registry = OwnerRegistry(
            self.dapr,
            pod=s.pod_name,
            heartbeat_s=s.owner_heartbeat_s,
            ttl_s=s.owner_ttl_s,
        )
        await self.registry.start()
        self.locks = LockManager(self.dapr, self.registry, s.lock_store)
        self.services.locks = self.locks

    async def stop(self) -> None:
        if self._pulse_task is not None:
            self._pulse_task.cancel()
        if self.fast_path is not None:
            await self.fast_path.close()
        if self.waker is not None:
            await self.waker.close()
        if self.runtime is not None:
            await asyncio.to_thread(self.runtime.shutdown)
        if self.locks is not None:
            await self.locks.release_all()
        if self.registry is not None:
            await self.registry.stop()
        if self.sandbox is not None:
            await asyncio.to_thread(self.sandbox.close)


def make_sandbox(s: Settings) -> Sandbox:
    """The process's python-tool sandbox, every limit from the settings."""
    return Sandbox(
        SandboxLimits(
            fuel=s.sandbox_fuel,
            memory_bytes=s.sandbox_memory_bytes,
            timeout_s=s.sandbox_timeout_s,
            output_bytes=s.sandbox_output_bytes,
            code_bytes=s.sandbox_code_bytes,
        ),
        workers=s.sandbox_workers,
        cache_dir=s.sandbox_cache_dir,
    )


def owner_id(settings: Settings) -> str:
    """This process's id for the run tracker's leader lock."""
    return f"{settings.pod_name or socket.gethostname()}-{os.getpid()}"


@asynccontextmanager
async def open_services(
    settings: Settings,
    metrics: Metrics,
    tracer: Callable[[], Tracer],
    *,
    start_worker: bool = True,
) -> AsyncIterator[Services]:
    """The API's services for as long as the block runs (see the module docstring).
    ``start_worker=False``: the API alone, without a sidecar (docs, schema, tests)."""
    dapr = DaprClient(settings.dapr_http_port, settings.state_store)  # the one Dapr client
    tracker = RunTracker(settings, metrics, tracer, owner_id(settings), dapr)
    catalog = RunCatalog(dapr, settings.catalog_page_size)
    tracker.end_hooks.append(catalog.end_hook)  # a run's end lands in its catalog record
    supervisor = RunSupervisor(settings, metrics, owner_id(settings), tracker, dapr)
    tracker.on_ended.append(supervisor.forget)  # an ended run's start input is dropped
    services = Services(
        settings=settings,
        specs=SpecRegistry.for_settings(settings.specs_dir),
        payloads=PayloadStore(dapr, settings.payload_ref_bytes, settings.payload_ttl_s),
        metrics=metrics,
        tracker=tracker,
        supervisor=supervisor,
        catalog=catalog,
        agent_catalog=AgentCatalog(dapr, settings.catalog_page_size),
        agent_baseline=load_baseline(settings.agent_baseline),
        agent_templates=load_templates(settings.agent_templates_dir),
        history=HistoryReader(
            settings.dapr_grpc_port,
            settings.dapr_api_token.get_secret_value() if settings.dapr_api_token else None,
        ),
        run_keys=RunKeys(dapr),
        live=LiveProgress(dapr, RunKeys(dapr)),
        identity=Identity(settings, dapr),
    )
    if settings.slack_enabled:
        services.slack = FrontDoor(services)
    if settings.pubsub_enabled:
        # its events ride in the tracker's end transaction (swarmd.engine.outbox)
        services.outbox = Outbox(settings, metrics, owner_id(settings), dapr)
        services.tracker.end_hooks.append(services.outbox.on_ended)
    if not start_worker:
        try:
            yield services
        finally:
            await _close(services, dapr)
        return
    worker = _Worker(settings, dapr, services)
    starting = asyncio.create_task(worker.start())
    tracking = asyncio.create_task(services.tracker.run(lambda: services.workflows))
    tasks = [tracking, starting]
    if settings.supervisor_enabled:  # one replica acts at a time (its leader lock)
        tasks.append(asyncio.create_task(supervisor.run(lambda: services.workflows)))
    if services.outbox is not None:  # one replica publishes at a time (its leader lock)
        tasks.append(asyncio.create_task(services.outbox.run(lambda: services.workflows)))
    try:
        yield services
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if services.slack is not None:  # its background work, before the worker stops
            await services.slack.close()
        await worker.stop()
        await _close(services, dapr)


async def _close(services: Services, dapr: DaprClient) -> None:
    if services.slack is not None:
        await services.slack.close()
    await services.history.close()
    if services.outbox is not None:
        await services.outbox.close()
    await dapr.close()
