"""The caller of a request: the operator, or one user.

Invariants:

* An operator sees and steers everything.
* A user acts only as itself: whatever names another user (a run it does not own,
  another user's agent or usage) is answered exactly as if it did not exist, so
  neither its existence nor its details leak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Via = Literal["operator", "token", "oidc", "slack"]


@dataclass(frozen=True)
class Caller:
    #: None for the operator
    user: str | None
    via: Via

    @classmethod
    def operator(cls) -> Caller:
        return cls(user=None, via="operator")

    @property
    def is_operator(self) -> bool:
        return self.user is None

    def may_see(self, owner: str | None) -> bool:
        """True if this caller may see what ``owner`` owns (None: owned by no user)."""
        return self.is_operator or (owner is not None and owner == self.user)
