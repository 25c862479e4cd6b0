"""The identity service of one app: who a bearer credential is, and the per-user
limits. Built once by the composition root (no I/O until a request)."""

from __future__ import annotations

import hmac

from swarmd.config import Settings
from swarmd.engine.dapr import DaprClient
from swarmd.errors import Unauthorized
from swarmd.identity.caller import Caller
from swarmd.identity.limits import StartRate
from swarmd.identity.oidc import OidcVerifier, looks_like_jwt
from swarmd.identity.tokens import TokenStore, looks_like_token


class Identity:
    def __init__(self, settings: Settings, state: DaprClient) -> None:
        """``state``: the process's Dapr client (made and closed by the entrypoint)."""
        self.settings = settings
        self.state = state
        self.tokens = TokenStore(self.state)
        self.oidc = OidcVerifier(settings) if settings.oidc_enabled else None
        self.start_rate = StartRate(self.state, settings)

    async def authenticate(self, credential: str) -> Caller:
        """The caller a bearer credential stands for, or :class:`Unauthorized`.

        The operator token is compared in constant time; a user token costs one
        state read (revocation is seen at once); a JWT is verified locally against
        the cached key set."""
        expected = self.settings.api_token
        if expected is not None and hmac.compare_digest(
            credential.encode(), expected.get_secret_value().encode()
        ):
            return Caller.operator()
        if looks_like_token(credential):
            user = await self.tokens.user_of(credential)
            if user is None:
                raise Unauthorized("invalid or revoked token")
            return Caller(user=user, via="token")
        if self.oidc is not None and looks_like_jwt(credential):
            return Caller(user=await self.oidc.user_of(credential), via="oidc")
        raise Unauthorized("invalid bearer token")
