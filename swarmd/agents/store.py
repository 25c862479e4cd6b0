"""Per-user state of user agents in the Dapr state store, under keys scoped to the user.

Every key of user ``u`` is ``agent|u|...`` or, for the memory tools of its agent,
``memory|user:u|...``. Dapr's state API cannot list keys, so each key that is
not derived from the message counter is recorded in the user's index
(``agent|u|index``); deprovisioning deletes the derived keys, the indexed keys
and the index, then reads every one back to prove it is gone.

Writes that can race are guarded in one of two ways:

* compare-and-set on ETags, for the hot path: a new message (:meth:`UserStore.enqueue`:
  the inbox counter's ETag, and the profile's, so nothing lands after deprovisioning)
  and, in workflow v2, a turn's writes (``swarmd.agents.turn``);
* the user's distributed lock ``turn.<u>`` for the rest (provisioning, customising,
  schedules, deprovisioning, and v1's turn activities, which add the
  ``busy.user.<u>`` marker). One lock per user, not one per purpose: every lock
  operation also updates the owner registry.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from swarmd.activities.tools import LockFn
from swarmd.agents.config import USER_ID_RE
from swarmd.agents.lease import Lease
from swarmd.engine.state import Op, StateStore
from swarmd.errors import DependencyUnavailable

MEMORY_AGENT = "assistant"
LOCK_TTL_S = 60
ENQUEUE_ATTEMPTS = 20
#: what a new message does to the user's turn lease (see ``UserStore.enqueue``)
LeaseFn = Callable[[Lease], "Lease | None"]
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


def usage_plus(
    usage: dict[str, int] | None, tokens: int, messages: int = 0, jobs: int = 0
) -> dict[str, int]:
    """A usage record (``tokens``, ``messages``, ``jobs``) with the given amounts added."""
    u = usage or {"tokens": 0, "messages": 0, "jobs": 0}
    return {
        "tokens": u["tokens"] + tokens,
        "messages": u["messages"] + messages,
        "jobs": u["jobs"] + jobs,
    }


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
        sets the marker ``busy.user.<user>``, that readers use to show "agent busy"."""
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

    async def enqueue(
        self,
        user: str,
        text: str,
        kind: str,
        check: Callable[[dict[str, Any]], None] | None = None,
        lease: LeaseFn | None = None,
        **extra: Any,
    ) -> dict[str, Any] | None:
        """Append a message to the user's inbox; its record, or None if the user has no
        agent. ``check(profile)`` may refuse it (by raising) before anything is written.

        Lock-free: one read of the profile and the inbox counter, then one transaction
        that bumps the counter by compare-and-set on its ETag (so concurrent senders
        get distinct numbers) and rewrites the profile with its ETag (so nothing is
        added once deprovisioning deleted it).

        With ``lease`` (v3's fast path), the user's turn lease is read with them and
        ``lease(current)`` says what to write with the message (compare-and-set on its
        ETag too); the record gets ``lease`` (what was written, or None) and ``lease_was``."""
        pkey, ckey, lkey = key(user, "profile"), key(user, "seq"), key(user, "lease")
        keys = [pkey, ckey, lkey] if lease is not None else [pkey, ckey]
        for attempt in range(ENQUEUE_ATTEMPTS):
            snap = await self.state.get_many(keys)
            profile, counter = snap[pkey], snap[ckey]
            if profile.value is None:
                return None
            if check is not None:
                check(profile.value)
            seq = int(counter.value or 0) + 1
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
            ops = [
                Op(pkey, profile.value, etag=profile.etag),
                Op(ckey, seq, etag=counter.etag, create=counter.etag is None),
                Op(key(user, "msg", seq), msg),
            ]
            was, taken = None, None
            if lease is not None:
                le = snap[lkey]
                was = Lease.of(le.value)
                taken = lease(was)
                if taken is not None:
                    ops.append(Op(lkey, taken.dump(), etag=le.etag, create=le.etag is None))
                    if taken.done == seq - 1:  # next in line: its turn starts right away
                        msg.update(status="running", started_at=msg["created_at"])
            if await self.state.transact(ops):
                return {**msg, "lease": taken, "lease_was": was} if lease is not None else msg
            await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # another sender won
        raise DependencyUnavailable(f"inbox of {user!r}: too many concurrent senders, retry")

    async def add_usage(self, user: str, tokens: int, messages: int = 0, jobs: int = 0) -> None:
        """Add to today's and the all-time usage (call under lock)."""
        day = today()
        for parts in (("usage", day), ("usage",)):
            u = usage_plus(await self.get(user, *parts), tokens, messages, jobs)
            await self.put(user, *parts, value=u)
        await self.record(user, key(user, "usage", day))

    async def all_keys(self, user: str) -> list[str]:
        """Every state key this user may have."""
        seq = int(await self.get(user, "seq") or 0)
        parts = ("profile", "seq", "memory", "schedules", "usage", "index", "lease")
        fixed = [key(user, p) for p in parts]
        msgs = [key(user, "msg", i) for i in range(1, seq + 1)]
        journals = [key(user, "turn", i) for i in range(1, seq + 1)]  # v2's per-turn journal
        return [*fixed, *msgs, *journals, *await self.index(user)]
