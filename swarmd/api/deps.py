"""FastAPI dependencies: settings and one typed dependency per service (who is
calling: :mod:`swarmd.api.auth`).

The lifespan (:func:`swarmd.api.app.create_app`) asks the composition root
(:mod:`swarmd.compose.services`) for one :class:`Services` object and puts it
in the lifespan state; routes never read ``app.state`` or ``request.state``
themselves. A route names what it needs by type::

    @router.get("/{run_id}")
    async def get_run(run_id: str, client: WorkflowClientDep, payloads: PayloadsDep): ...

Services that need the Dapr sidecar (the workflow client, the lock manager, the
user-agent store) are ``None`` until the worker has connected; their
dependency answers 503 ``dependency_unavailable`` until then, so a route that
validates its input first (parameters and body are resolved before the
dependency's value is used) still answers 4xx for bad input without a sidecar.

To add a service: a field on :class:`Services`, built in
``swarmd.compose.services``, and an ``XDep = Annotated[X, Depends(get_x)]`` here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import grpc
from dapr.ext.workflow import WorkflowState
from dapr.ext.workflow.aio import DaprWorkflowClient
from fastapi import Depends, Query, Request

from swarmd.agents.config import Baseline, Template
from swarmd.agents.fastpath import FastPath
from swarmd.agents.store import UserStore
from swarmd.agents.wake import Waker
from swarmd.config import Settings
from swarmd.engine.catalog import CURSOR_RE, AgentCatalog, RunCatalog
from swarmd.engine.history import HistoryReader
from swarmd.engine.live import LiveProgress
from swarmd.engine.locks import LockManager
from swarmd.engine.outbox import Outbox
from swarmd.engine.payloads import PayloadStore
from swarmd.engine.runkeys import RunKeys
from swarmd.engine.spec import SpecRegistry
from swarmd.engine.supervisor import RunSupervisor
from swarmd.engine.tracker import RunTracker, instance_id
from swarmd.errors import DependencyUnavailable
from swarmd.identity.service import Identity
from swarmd.metrics import Metrics

if TYPE_CHECKING:
    from swarmd.slack.frontdoor import FrontDoor

T = TypeVar("T")


@dataclass
class Services:
    """Every long-lived client the API uses, built once per process by the lifespan.

    The first group exists from the start; the second is set once the workflow
    worker is connected to its sidecar (``ready``), and is ``None`` before."""

    settings: Settings
    specs: SpecRegistry
    payloads: PayloadStore
    metrics: Metrics
    tracker: RunTracker
    #: the run supervisor (swarmd.engine.supervisor): revivals, a run's generation
    supervisor: RunSupervisor
    #: the durable catalogs behind GET /v1/runs and GET /v1/agents
    catalog: RunCatalog
    agent_catalog: AgentCatalog
    agent_baseline: Baseline
    agent_templates: dict[str, Template]
    #: workflow histories (the run viewer's timeline); connects on first use
    history: HistoryReader
    #: the per-run key index (call journal, ...): purging a run deletes what it lists
    run_keys: RunKeys
    #: agents finished inside engine v2's groups before their workflow hears of them
    live: LiveProgress
    #: who is calling (tokens, OIDC) and the per-user limits
    identity: Identity
    #: the Slack front door, when SWARMD_SLACK_* are set
    slack: FrontDoor | None = None
    #: the pub/sub outbox and publisher (SWARMD_PUBSUB_ENABLED), else None
    outbox: Outbox | None = None
    # -- set when the worker is up
    workflows: DaprWorkflowClient | None = None
    locks: LockManager | None = None
    users: UserStore | None = None
    #: v3's fast path (SWARMD_USER_AGENT_VERSION=v3), else None
    fast_path: FastPath | None = None
    #: raises user agents' ``wake`` events, retrying those the sidecar refused
    waker: Waker | None = None
    ready: bool = False


def get_services(request: Request) -> Services:
    services: Services = request.state.services  # the lifespan state (create_app)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _service(name: str) -> Any:
    """``Depends`` on the ``Services`` field ``name``."""

    def get(services: ServicesDep) -> Any:
        return getattr(services, name)

    get.__name__ = f"get_{name}"
    return Depends(get)


def _required(value: T | None, what: str) -> T:
    if value is None:
        raise DependencyUnavailable(f"{what} not ready: the Dapr sidecar is not up yet")
    return value


def get_waker(services: ServicesDep) -> Waker:
    """The wake sender; 503 until the worker is connected."""
    return _required(services.waker, "workflow client")


def get_wf_client(services: ServicesDep) -> DaprWorkflowClient:
    """The workflow client; 503 until the worker is connected. Call it directly (not as a
    dependency) in a route that must validate its input first."""
    return _required(services.workflows, "workflow client")


def get_locks(services: ServicesDep) -> LockManager:
    return _required(services.locks, "lock manager")


def get_users(services: ServicesDep) -> UserStore:
    return _required(services.users, "the engine is")


SettingsDep = Annotated[Settings, _service("settings")]
SpecsDep = Annotated[SpecRegistry, _service("specs")]
PayloadsDep = Annotated[PayloadStore, _service("payloads")]
RunKeysDep = Annotated[RunKeys, _service("run_keys")]
MetricsDep = Annotated[Metrics, _service("metrics")]
TrackerDep = Annotated[RunTracker, _service("tracker")]
SupervisorDep = Annotated[RunSupervisor, _service("supervisor")]
CatalogDep = Annotated[RunCatalog, _service("catalog")]
AgentCatalogDep = Annotated[AgentCatalog, _service("agent_catalog")]
HistoryDep = Annotated[HistoryReader, _service("history")]
IdentityDep = Annotated[Identity, _service("identity")]
WorkflowClientDep = Annotated[DaprWorkflowClient, Depends(get_wf_client)]
LocksDep = Annotated[LockManager, Depends(get_locks)]
UserStoreDep = Annotated[UserStore, Depends(get_users)]

#: the paging parameters of every list (GET /v1/runs, GET /v1/agents)
PageLimit = Annotated[int, Query(ge=1, le=200, description="at most this many items")]
PageCursor = Annotated[
    str | None, Query(pattern=CURSOR_RE, description="next_cursor of the previous page")
]


#: a read's retry pauses (s): quick ones for a read racing a write of the same
#: workflow, longer ones only while the sidecar is unreachable (UNAVAILABLE), which
#: spans one capped reconnect of the channel (``compose.grpc_limits``) after daprd returns
READ_RETRY_S = (0.05, 0.1, 0.2)
UNREACHABLE_RETRY_S = (0.4, 0.8, 1.0)


async def read_state(
    client: DaprWorkflowClient,
    instance_id: str,
    *,
    payloads: bool = True,
    map_error: Callable[[grpc.RpcError], Exception] | None = None,
) -> WorkflowState | None:
    """A workflow's state, or None if there is no such instance.

    Retries the sidecar's transient read errors with a short backoff (longer while
    the sidecar cannot be reached, e.g. just after a daprd restart), then raises
    ``map_error(exc)`` or a 503, never a 500. Without ``payloads`` the custom status
    is not fetched either.
    """
    pauses = READ_RETRY_S + UNREACHABLE_RETRY_S
    for attempt in range(len(pauses) + 1):
        try:
            return await client.get_workflow_state(instance_id, fetch_payloads=payloads)
        except grpc.RpcError as exc:
            unreachable = hasattr(exc, "code") and exc.code() == grpc.StatusCode.UNAVAILABLE
            if attempt == len(pauses) or (attempt >= len(READ_RETRY_S) and not unreachable):
                if map_error is not None:
                    raise map_error(exc) from exc
                raise DependencyUnavailable(
                    f"could not read workflow {instance_id!r} from the sidecar: {exc}"
                ) from exc
            await asyncio.sleep(pauses[attempt])
    return None  # unreachable: the loop returns or raises


async def read_run(
    services: Services,
    client: DaprWorkflowClient,
    run_id: str,
    *,
    payloads: bool = True,
    map_error: Callable[[grpc.RpcError], Exception] | None = None,
) -> WorkflowState | None:
    """A run's workflow state: its own workflow's or, once the run supervisor
    restarted the run as a fresh generation, that generation's (whose
    ``instance_id`` is then ``<run>:g<n>``: act on that instance, show ``run_id``)."""
    state = await read_state(client, run_id, payloads=payloads, map_error=map_error)
    if state is not None:
        return state
    generation = await services.supervisor.generation(run_id)
    if generation <= 1:
        return None
    return await read_state(
        client, instance_id(run_id, generation), payloads=payloads, map_error=map_error
    )
