"""``/v1/users``: the operator mints and revokes user tokens; ``/v1/me`` says who
the caller is. Tokens are shown once, stored hashed (swarmd.identity.tokens)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BaseModel, Field

from swarmd.agents.config import NAME_RE
from swarmd.api.auth import CallerDep, authenticate, require_operator
from swarmd.api.deps import IdentityDep
from swarmd.api.openapi import errors
from swarmd.errors import NotFound
from swarmd.slack.frontdoor import deprovision_key

router = APIRouter(prefix="/v1", tags=["users"], dependencies=[Depends(authenticate)])
#: the operator-only routes' refusal of a user's credentials
_OPERATOR = errors(_403="Operator only: a user's credentials are refused")
#: the operator-only routes: every one refuses a user's credentials (403), as documented
operator = APIRouter(dependencies=[Depends(require_operator)], responses=_OPERATOR)

User = Annotated[
    str,
    Path(description="the user id (as in /v1/agents/{user_id} and input.user)", pattern=NAME_RE),
]


class MintedToken(BaseModel):
    token: str = Field(description="The bearer token. Shown only in this answer: store it now")
    token_id: str = Field(description="Names the token for listing and revoking it")
    user: str
    created_at: str


class TokenInfo(BaseModel):
    token_id: str
    user: str
    created_at: str


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class Revoked(BaseModel):
    user: str
    revoked: int = Field(description="How many tokens were revoked")


class Me(BaseModel):
    user: str | None = Field(description="The user the credentials stand for; null: operator")
    operator: bool
    via: Literal["operator", "token", "oidc", "slack"]


class UserView(BaseModel):
    user: str
    tokens: int = Field(description="How many tokens the user has")
    deprovisioned: dict[str, Any] | None = Field(
        None,
        description="The report of the last deprovisioning by the Slack front door "
        "(a deactivated Slack user): keys_left, workflows_left, tokens_revoked, clean",
    )


@router.get("/me", response_model=Me)
async def me(caller: CallerDep) -> Me:
    """Who the presented credentials are."""
    return Me(user=caller.user, operator=caller.is_operator, via=caller.via)


@operator.get(
    "/users/{user}",
    response_model=UserView,
)
async def get_user(user: User, identity: IdentityDep) -> UserView:
    """Operator only: the user's identity record."""
    report = (await identity.state.get(deprovision_key(user))).value
    return UserView(
        user=user,
        tokens=len(await identity.tokens.list(user)),
        deprovisioned=report if isinstance(report, dict) else None,
    )


@operator.post(
    "/users/{user}/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=MintedToken,
)
async def mint_token(user: User, identity: IdentityDep) -> MintedToken:
    """Operator only: a new bearer token acting as ``user`` (and only as ``user``)."""
    return MintedToken.model_validate(await identity.tokens.mint(user))


@operator.get(
    "/users/{user}/tokens",
    response_model=TokenList,
)
async def list_tokens(user: User, identity: IdentityDep) -> TokenList:
    """Operator only: the user's tokens (ids and dates, never the tokens)."""
    return TokenList(tokens=[TokenInfo.model_validate(t) for t in await identity.tokens.list(user)])


@operator.delete(
    "/users/{user}/tokens",
    response_model=Revoked,
)
async def revoke_all(user: User, identity: IdentityDep) -> Revoked:
    """Operator only: revoke every token of the user; they answer 401 from now on."""
    return Revoked(user=user, revoked=await identity.tokens.revoke(user))


@operator.delete(
    "/users/{user}/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(_404="The user has no token with that id"),
)
async def revoke_one(
    user: User, token_id: Annotated[str, Path(max_length=64)], identity: IdentityDep
) -> Response:
    """Operator only: revoke one token; 404 if the user has no token with that id."""
    if not await identity.tokens.revoke(user, token_id):
        raise NotFound(f"user {user!r} has no token {token_id!r}", field="token_id")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


router.include_router(operator)
