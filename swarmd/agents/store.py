"""Per-user state of user agents in the Dapr state store, under keys scoped to the user.

Every key of user ``u`` is ``agent|u|...`` or, for the memory tools of its agent,
``memory|user:u|...``. Dapr's state API cannot list keys, so each key that is
not derived from the message counter is recorded in the user's index
(``agent|u|index``); deprovisioning deletes the derived keys, the indexed keys
and the index, then reads every one back to prove it is gone.

Mutations of one user's records happen under the user's distributed lock
``turn.<u>`` (the API and the workflow's activities both write them); a turn's
side effects hold it with the ``busy.user.<u>`` marker. One lock per user, not
one per purpose: every lock operation also updates the owner registry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from swarmd.activities.tools import LockFn
from swarmd.agents.config import USER_ID_RE
from swarmd.engine.state import StateStore

MEMORY_AGENT = "assistant"
LOCK_TTL_S = 60
WORKFLOW_PREFIX = "user-agent-"


def instance_id(user: str) -> str:
    """The user's workflow instance: stable, derived from the user id."""
    return f"{WORKFLOW_PREFIX}{user}"


def turn_instance_id(user: str, seq: int) -> str:
    return f"{instance_id(user)}.t{seq}"


def key(user: str, *parts: str | int) -> str:
    return "|".join(["agent", user, *(str(p) for p in parts)])


def message_id(seq: int) -> str:
    return f"m{seq}"


def parse_message_id(mid: str) -> int | None:
    if mid.startswith("m") and mid[1:].isdigit():
        return int(mid[1:])
    return None


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class UserStore:
    def __init__(self, state: StateStore, lock: LockFn) -> None:
        self.state = state
        self.lock = lock

    @asynccontextmanager
    async def locked(self, user: str, turn: bool = False) -> AsyncIterator[None]:
        """The user's one lock, ``turn.<user>``. ``turn=True`` (a turn's side effects) also
        sets the marker ``busy.user.<user>``, as ``LockManager.user_turn`` does."""
        marker = {"marker": f"busy.user.{user}"} if turn else {}
        async with self.lock(f"turn.{user}", LOCK_TTL_S, wait_s=30.0, **marker):
            yield

    async def get(self, user: str, *parts: str | int) -> Any | None:
        return await self.state.get(key(user, *parts))

    async def put(self, user: str, *parts: str | int, value: Any) -> None:
        await self.state.put(key(user, *parts), value)

    async def index(self, user: str) -> list[str]:
        v = await self.state.get(key(user, "index"))
        return list(v) if isinstance(v, list) else []

    async def record(self, user: str, full_key: str) -> None:
        """Add a key to the user's index (call under :meth:`locked`)."""
        idx = await self.index(user)
        if full_key not in idx:
            await self.state.put(key(user, "index"), [*idx, full_key])

    async def record_user_key(self, user: str, full_key: str) -> None:
        """Index a key written for ``user`` elsewhere (memory tools), if it has an agent."""
        if not USER_ID_RE.match(user) or await self.get(user, "profile") is None:
            return
        async with self.locked(user):
            await self.record(user, full_key)

    async def enqueue(self, user: str, text: str, kind: str, **extra: Any) -> dict[str, Any]:
        """Append a message to the user's inbox; returns its record (call under lock)."""
        seq = int(await self.get(user, "seq") or 0) + 1
        msg = {
            "message_id": message_id(seq),
            "seq": seq,
            "kind": kind,
            "text": text,
            "status": "queued",
            "reply": None,
            "error": None,
            "usage": None,
            "created_at": now_iso(),
            "answered_at": None,
            **extra,
        }
        await self.put(user, "msg", seq, value=msg)
        await self.put(user, "seq", value=seq)
        return msg

    async def add_usage(self, user: str, tokens: int, messages: int = 0, jobs: int = 0) -> None:
        """Add to today's and the all-time usage (call under lock)."""
        day = today()
        for parts in (("usage", day), ("usage",)):
            u = await self.get(user, *parts) or {"tokens": 0, "messages": 0, "jobs": 0}
            u = {
                "tokens": u["tokens"] + tokens,
                "messages": u["messages"] + messages,
                "jobs": u["jobs"] + jobs,
            }
            await self.put(user, *parts, value=u)
        await self.record(user, key(user, "usage", day))

    async def all_keys(self, user: str) -> list[str]:
        """Every state key this user may have."""
        seq = int(await self.get(user, "seq") or 0)
        fixed = [key(user, p) for p in ("profile", "seq", "memory", "schedules", "usage", "index")]
        msgs = [key(user, "msg", i) for i in range(1, seq + 1)]
        return [*fixed, *msgs, *await self.index(user)]
