"""Engine v2's pure parts: how agents are grouped, and the call journal's keys."""

from __future__ import annotations

import pytest

from swarmd.engine.journal import call_key, entry_key, fingerprint
from swarmd.engine.runkeys import SHARDS, _shard
from swarmd.workflows.steps import GROUP_SIZE_V3, GROUP_SIZES, MAX_GROUPS, plan_groups


@pytest.mark.parametrize(
    ("n", "max_parallel", "expected"),
    [
        (1000, 1000, (50, 50, 20)),  # every call in flight at once, 20 groups
        (10, 2, (10, 2, 1)),  # one group, two calls at a time: a budget stops it in time
        (50, 10, (50, 10, 1)),
        (30, 6, (30, 6, 1)),
        (10_000, 10_000, (100, 100, 100)),  # past 5,000 agents the groups grow instead
        (1, 50, (1, 1, 50)),
    ],
)
def test_plan_groups(n: int, max_parallel: int, expected: tuple[int, int, int]) -> None:
    size, per_group, in_flight = plan_groups(n, max_parallel)
    assert (size, per_group, in_flight) == expected
    # never more calls in flight than max_parallel, and never more groups than MAX_GROUPS
    assert per_group * in_flight <= max(max_parallel, 1)
    assert -(-n // size) <= MAX_GROUPS


@pytest.mark.parametrize(
    ("n", "max_parallel", "expected"),
    [
        (1000, 1000, (250, 250, 4)),  # engine v3: four groups where v2 had twenty
        (1000, 16, (250, 16, 1)),
        (200, 1000, (200, 200, 5)),  # one group, every call in flight at once
        (25_000, 25_000, (250, 250, 100)),
        (50_000, 50_000, (500, 500, 100)),  # past 25,000 agents the groups grow instead
    ],
)
def test_plan_groups_on_engine_v3(
    n: int, max_parallel: int, expected: tuple[int, int, int]
) -> None:
    assert plan_groups(n, max_parallel, GROUP_SIZE_V3) == expected


@pytest.mark.parametrize("group_size", sorted(set(GROUP_SIZES.values())))
def test_plan_groups_keeps_max_parallel_meaning_calls_in_flight(group_size: int) -> None:
    for n in (1, 7, 49, 50, 51, 249, 251, 999, 1000, 4999, 5001, 10_000, 30_000):
        for mp in (1, 2, 6, 10, 49, 50, 51, 200, 1000, 10_000):
            size, per_group, in_flight = plan_groups(n, mp, group_size)
            assert 1 <= per_group <= size <= max(n, 1)
            assert per_group * in_flight <= mp
            assert size <= max(group_size, -(-n // MAX_GROUPS))
            assert -(-n // size) <= MAX_GROUPS


def test_call_keys_are_deterministic_and_attempt_free() -> None:
    assert call_key("agent-3", "agent-3", 2, 1) == "agent-3/agent-3/2/1"
    assert call_key("planner", "planner") == "planner/planner/1/0"
    # Dapr refuses state keys holding "||"
    assert "||" not in entry_key("run-1", call_key("a", "b"))


def test_fingerprint_ignores_key_order_but_not_content() -> None:
    a = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": None}
    b = {"tools": None, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert fingerprint(a) == fingerprint(b)
    c = {**a, "messages": [{"role": "user", "content": "hi!"}]}
    assert fingerprint(a) != fingerprint(c)


def test_run_keys_spread_over_shards() -> None:
    # groups of one run land on different shards, so they rarely contend
    seen = {_shard(f"journal|run|agent-{i}/agent-{i}/1/0") for i in range(0, 10_000, 50)}
    assert seen == set(range(SHARDS))
