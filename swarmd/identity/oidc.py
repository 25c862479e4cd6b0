"""OIDC bearer JWTs: verified against the configured issuer, audience and JWKS
(PyJWT), one claim mapped to the swarmd user id.

The JWKS is fetched on the first JWT and cached (PyJWT's ``PyJWKClient``: keys for
``JWKS_CACHE_S``, refetched when a token names an unknown ``kid``, so a rotated key
is picked up). Required claims: ``exp``, ``iss``, ``aud`` and the user claim.
"""

from __future__ import annotations

import asyncio

import jwt

from swarmd.agents.config import USER_ID_RE
from swarmd.config import Settings
from swarmd.errors import DependencyUnavailable, Unauthorized

JWKS_CACHE_S = 300
LEEWAY_S = 30


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and credential.startswith("ey")


class OidcVerifier:
    def __init__(self, settings: Settings) -> None:
        if settings.oidc_jwks_url is None:
            raise ValueError("OIDC needs SWARMD_OIDC_JWKS_URL")
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.claim = settings.oidc_user_claim
        self.algorithms = list(settings.oidc_algorithms)
        self.jwks = jwt.PyJWKClient(
            settings.oidc_jwks_url, cache_keys=True, lifespan=JWKS_CACHE_S, timeout=10
        )

    async def user_of(self, token: str) -> str:
        """The user id a valid JWT maps to; :class:`Unauthorized` for any invalid one."""
        return await asyncio.to_thread(self._verify, token)

    def _verify(self, token: str) -> str:
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise DependencyUnavailable(f"cannot fetch the OIDC key set: {exc}") from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise Unauthorized(f"invalid OIDC token: {exc}") from exc
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", self.claim]},
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid OIDC token: {exc}") from exc
        user = claims.get(self.claim)
        if not isinstance(user, str) or not USER_ID_RE.match(user):
            raise Unauthorized(
                f"invalid OIDC token: claim {self.claim!r} is not a user id "
                "(1-64 letters, digits, _ or -)"
            )
        return user
