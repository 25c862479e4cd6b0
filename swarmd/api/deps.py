"""FastAPI dependencies: settings, auth, and the clients the lifespan created."""

from __future__ import annotations

import hmac
from typing import Annotated

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
