"""Authentication and authorisation as FastAPI dependencies.

* ``CallerDep``: who is calling (:class:`~swarmd.identity.caller.Caller`); 401 without
  valid credentials. Every ``/v1`` router but Slack's depends on it.
* ``OperatorDep``: the same, 403 for a user token (operator-only endpoints).
* ``owned_user``: a path's ``{user_id}`` that the caller may act as; any other user
  answers 404 exactly like a user without an agent.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from swarmd.agents.config import NAME_RE
from swarmd.api.deps import IdentityDep
from swarmd.errors import AgentNotFound, Forbidden, Unauthorized
from swarmd.identity.caller import Caller

_bearer = HTTPBearer(
    auto_error=False,
    description="The operator token (SWARMD_API_TOKEN), a user token, or an OIDC JWT",
)


async def authenticate(
    identity: IdentityDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    return await identity.authenticate(creds.credentials)


CallerDep = Annotated[Caller, Depends(authenticate)]


def require_operator(caller: CallerDep) -> Caller:
    if not caller.is_operator:
        raise Forbidden("this endpoint needs the operator token")
    return caller


OperatorDep = Annotated[Caller, Depends(require_operator)]


def not_found_agent(user: str) -> AgentNotFound:
    """What a missing agent and another user's agent both answer."""
    return AgentNotFound(f"no agent for user {user!r}", field="user_id")


def owned_user(
    # the pattern is checked by check_user_id (its error names the field ``user_id``)
    user_id: Annotated[
        str, Path(description="the user's id", json_schema_extra={"pattern": NAME_RE})
    ],
    caller: CallerDep,
) -> str:
    if not caller.may_see(user_id):
        raise not_found_agent(user_id)
    return user_id


OwnedUser = Annotated[str, Depends(owned_user)]


def owner_scope(caller: CallerDep) -> str | None:
    """Whose runs and agents the caller may list: None for all of them (the operator),
    else the caller's own user."""
    return caller.user


OwnerScopeDep = Annotated[str | None, Depends(owner_scope)]
