"""The turn lease of a user's agent (workflow v3): who may answer the user's messages.

One record per user, ``agent|<u>|lease``: ``{owner, until, done, watched}``.

* ``owner``: who answers messages now: an app process (its random token, the
  fast path of :mod:`swarmd.agents.fastpath`), :data:`WORKFLOW` (the user's
  workflow, answering in its ``sweep`` activity), or None (nobody).
* ``until``: the lease ends then (ISO, UTC) unless its owner extends it. An
  owner stops answering once it would run past ``until`` minus
  :data:`SAFETY_S`; nobody else takes the lease over before ``until``.
* ``done``: the last message that reached a final status (answered, failed,
  budget_exhausted). It is written in the same transaction as the reply, so it
  is never behind the inbox.
* ``watched``: ``"v3"`` once a v3 generation of the user's workflow swept it; the
  fast path only runs for such users (a v1/v2 generation knows no lease).

Invariants:

* **One answerer.** Every write of the record is a compare-and-set on its ETag,
  and every reply is committed together with the record (same ETag): a process
  that lost its lease cannot store a reply, and nobody takes a valid lease.
* **A valid process lease is always watched.** Whoever takes a lease that was
  not its own valid one, or extends its own and finds, once the write landed,
  less than ``SAFETY_S`` left of the old one, raises the workflow's ``wake``
  event after the write (``swarmd.agents.fastpath.still_watched``); the
  workflow, woken, waits with a durable timer until ``SAFETY_S`` after the
  lease's ``until`` and sweeps again as long as the lease is valid. So if the
  owner dies, its messages are answered by the workflow after ``until``: a
  crash costs latency, never a message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

#: ``owner`` of a lease the user's workflow holds
WORKFLOW = "workflow"
#: an owner stops taking new calls this long before ``until``; the workflow's sweep
#: fires this long after it
SAFETY_S = 2.0


class Lease(BaseModel):
    model_config = ConfigDict(extra="ignore")
    owner: str | None = None
    until: str | None = None
    done: int = 0
    watched: str | None = None

    @classmethod
    def of(cls, raw: Any) -> Lease:
        return cls.model_validate(raw) if isinstance(raw, dict) else cls()

    def left_s(self, now: datetime | None = None) -> float:
        """Seconds until the lease ends (<= 0: it ended or nobody holds it)."""
        if self.owner is None or self.until is None:
            return 0.0
        at = datetime.fromisoformat(self.until)
        return (at - (now or datetime.now(UTC))).total_seconds()

    def valid(self, now: datetime | None = None) -> bool:
        return self.left_s(now) > 0

    def held_by(self, owner: str, now: datetime | None = None) -> bool:
        """``owner`` holds it with time to make a call (more than SAFETY_S left)."""
        return self.owner == owner and self.left_s(now) > SAFETY_S

    def taken(self, owner: str, lease_s: float) -> Lease:
        """This record, held by ``owner`` for ``lease_s`` seconds from now."""
        until = (datetime.now(UTC) + timedelta(seconds=lease_s)).isoformat()
        return self.model_copy(update={"owner": owner, "until": until})

    def released(self) -> Lease:
        return self.model_copy(update={"owner": None, "until": None})

    def dump(self) -> dict[str, Any]:
        return self.model_dump()
