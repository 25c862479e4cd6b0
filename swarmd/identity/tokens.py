"""User tokens, minted by the operator, stored hashed in the Dapr state store.

A token is ``swd_`` + 43 URL-safe characters (256 random bits). Only its SHA-256
is stored (a token this long needs no slow hash: it cannot be guessed, only
stolen, and a stolen hash is not a token). Keys:

* ``swarmd-token|<sha256>`` -> ``{"user", "token_id", "created_at"}`` (the lookup of
  every request: one state read);
* ``swarmd-user|<user>|tokens`` -> ``{token_id: sha256}``, so revoking needs no scan.

Invariants: the token itself is returned once, by :meth:`TokenStore.mint`, and never
stored or logged; a revoked token fails its next request on every replica (no
cache).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from swarmd.engine.dapr import DaprClient
from swarmd.errors import DependencyUnavailable

PREFIX = "swd_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _record_key(digest: str) -> str:
    return f"swarmd-token|{digest}"


def _user_key(user: str) -> str:
    return f"swarmd-user|{user}|tokens"


def looks_like_token(credential: str) -> bool:
    return credential.startswith(PREFIX) and 20 < len(credential) < 200


class TokenStore:
    def __init__(self, state: DaprClient) -> None:
        self.state = state

    async def mint(self, user: str) -> dict[str, str]:
        """A new token for ``user``: ``{"token", "token_id", "user", "created_at"}``."""
        token = PREFIX + secrets.token_urlsafe(32)
        digest = token_hash(token)
        token_id = "t" + digest[:15]
        record = {"user": user, "token_id": token_id, "created_at": _now()}
        if not await self.state.save(_record_key(digest), record, first_write=True):
            raise DependencyUnavailable("token collision; try again")  # 2^-256: never
        await self._update_index(user, lambda idx: {**idx, token_id: digest})
        return {"token": token, **record}

    async def user_of(self, token: str) -> str | None:
        """The user a token belongs to, or None (unknown or revoked)."""
        item = await self.state.get(_record_key(token_hash(token)))
        value = item.value
        if isinstance(value, dict) and isinstance(value.get("user"), str):
            return str(value["user"])
        return None

    async def list(self, user: str) -> list[dict[str, Any]]:
        index = (await self.state.get(_user_key(user))).value or {}
        out = []
        for digest in index.values():
            rec = (await self.state.get(_record_key(digest))).value
            if isinstance(rec, dict):
                out.append(rec)
        return sorted(out, key=lambda r: str(r.get("created_at")))

    async def revoke(self, user: str, token_id: str | None = None) -> int:
        """Revoke one token of ``user`` (or all of them); how many were revoked."""
        index: dict[str, str] = (await self.state.get(_user_key(user))).value or {}
        chosen = {k: v for k, v in index.items() if token_id is None or k == token_id}
        for digest in chosen.values():
            await self.state.delete(_record_key(digest))
        if chosen:
            await self._update_index(
                user, lambda idx: {k: v for k, v in idx.items() if k not in chosen}
            )
        return len(chosen)

    async def _update_index(self, user: str, change: Any) -> None:
        await self.state.update(
            _user_key(user),
            lambda value: change(value if isinstance(value, dict) else {}),
            attempts=20,
            what=f"the token index of {user!r}",
        )


def _now() -> str:
    return datetime.now(UTC).isoformat()
