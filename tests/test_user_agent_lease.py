"""The turn lease's rules (workflow v3): who may answer, and when the workflow is woken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from swarmd.agents.fastpath import accept, still_watched
from swarmd.agents.lease import SAFETY_S, WORKFLOW, Lease

LEASE_S = 15.0


def lease(owner: str | None, left_s: float | None, watched: str | None = "v3") -> Lease:
    until = None
    if left_s is not None:
        until = (datetime.now(UTC) + timedelta(seconds=left_s)).isoformat()
    return Lease(owner=owner, until=until, done=3, watched=watched)


FAST: Any = SimpleNamespace(owner="app-me", lease_s=LEASE_S)


def test_a_lease_is_held_only_with_time_left_for_a_call() -> None:
    assert lease("app-me", 10).held_by("app-me")
    assert not lease("app-me", SAFETY_S / 2).held_by("app-me")  # too close to its end
    assert lease("app-me", SAFETY_S / 2).valid()  # ...but nobody else may take it yet
    assert not lease("app-other", 10).held_by("app-me")
    assert not lease(None, None).valid() and not lease("app-me", -1).valid()


def test_taking_keeps_done_and_release_keeps_watched() -> None:
    taken = lease(None, None).taken("app-me", LEASE_S)
    assert taken.owner == "app-me" and taken.done == 3 and 14 < taken.left_s() <= 15
    freed = taken.released()
    assert (freed.owner, freed.until, freed.done, freed.watched) == (None, None, 3, "v3")


def test_a_message_takes_a_free_or_expired_lease_and_wakes_the_workflow() -> None:
    for current in (lease(None, None), lease("app-dead", -1), lease(WORKFLOW, -5)):
        taken, wake = accept(FAST, current)
        assert taken is not None and taken.owner == "app-me" and wake, current


def test_a_message_extends_its_own_lease_and_wakes_only_near_its_end() -> None:
    was = lease("app-me", 12)
    taken, _ = accept(FAST, was)
    assert taken is not None and taken.left_s() > 14 and still_watched(FAST, was)
    assert not still_watched(FAST, lease("app-me", SAFETY_S / 2))  # the sweep may be reading
    assert not still_watched(FAST, lease("app-dead", 12))  # taken over: the workflow may idle


def test_a_message_leaves_another_answerers_valid_lease_alone() -> None:
    assert accept(FAST, lease("app-other", 10)) == (None, False)
    assert accept(FAST, lease(WORKFLOW, 10)) == (None, False)


def test_no_fast_path_until_a_v3_workflow_watches() -> None:
    assert accept(FAST, lease(None, None, watched=None)) == (None, True)
