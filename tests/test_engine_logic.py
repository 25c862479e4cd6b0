"""Pure engine logic that workflows rely on: planner parsing, jittered backoff, tools."""

from __future__ import annotations

import pytest

from swarmd.activities.tools import ToolArgumentError, safe_eval
from swarmd.engine.models import RetrySpec
from swarmd.engine.retry import backoff_delay
from swarmd.workflows.scatter_gather import parse_subtasks


def test_parse_subtasks_exact_pad_and_truncate() -> None:
    text = "1. alpha\n2) beta\nnoise\n3. gamma"
    assert parse_subtasks(text, 3, "t") == ["alpha", "beta", "gamma"]
    assert parse_subtasks(text, 2, "t") == ["alpha", "beta"]
    padded = parse_subtasks(text, 5, "t")
    assert len(padded) == 5 and padded[3].startswith("Part 4 of 5")


def test_backoff_is_deterministic_jittered_and_capped() -> None:
    spec = RetrySpec(first_interval_s=1, backoff=2, max_interval_s=8)
    d1 = backoff_delay(spec, 1, "run/agent-1/1")
    assert d1 == backoff_delay(spec, 1, "run/agent-1/1")  # replay-safe
    assert 0.5 <= d1 <= 1.0
    assert all(4 <= backoff_delay(spec, 10, f"r/a-{i}/10") <= 8 for i in range(50))
    spread = {round(backoff_delay(spec, 3, f"r/agent-{i}/3"), 3) for i in range(100)}
    assert len(spread) > 90  # agents do not retry in lockstep


def test_calculator_is_arithmetic_only() -> None:
    assert safe_eval("(2+3)*4 - 1/2") == 19.5
    for bad in ("__import__('os')", "x+1", "2**1000", "1/0", "open('f')"):
        with pytest.raises(ToolArgumentError):
            safe_eval(bad)
