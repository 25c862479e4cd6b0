"""FastAPI dependencies: settings, auth, and the clients the lifespan created."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Annotated

import grpc
from dapr.ext.workflow import WorkflowState
from dapr.ext.workflow.aio import DaprWorkflowClient
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from swarmd.config import Settings
from swarmd.errors import DependencyUnavailable, Unauthorized

_bearer = HTTPBearer(auto_error=False, description="SWARMD_API_TOKEN")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def require_token(
    settings: SettingsDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = settings.api_token.get_secret_value() if settings.api_token else None
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <SWARMD_API_TOKEN>'")
    if expected is None or not hmac.compare_digest(creds.credentials, expected):
        raise Unauthorized("invalid bearer token")


def get_wf_client(request: Request) -> DaprWorkflowClient:
    client: DaprWorkflowClient | None = getattr(request.app.state, "wf_client", None)
    if client is None:
        raise DependencyUnavailable("workflow client not ready: the Dapr sidecar is not up yet")
    return client


WorkflowClientDep = Annotated[DaprWorkflowClient, Depends(get_wf_client)]


async def read_state(
    client: DaprWorkflowClient,
    instance_id: str,
    *,
    payloads: bool = True,
    map_error: Callable[[grpc.RpcError], Exception] | None = None,
) -> WorkflowState | None:
    """A workflow's state, or None if there is no such instance.

    Retries the sidecar's transient read errors (a read racing a write of the same
    workflow can fail) with a short backoff, then raises ``map_error(exc)`` or a 503,
    never a 500. Without ``payloads`` the custom status is not fetched either.
    """
    for attempt in range(4):
        try:
            return await client.get_workflow_state(instance_id, fetch_payloads=payloads)
        except grpc.RpcError as exc:
            if attempt == 3:
                if map_error is not None:
                    raise map_error(exc) from exc
                raise DependencyUnavailable(
                    f"could not read workflow {instance_id!r} from the sidecar: {exc}"
                ) from exc
            await asyncio.sleep(0.05 * 2**attempt)
    return None  # unreachable: the loop returns or raises
