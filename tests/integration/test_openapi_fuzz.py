"""The OpenAPI document tells the truth: schemathesis, all checks, the examples,
coverage and fuzzing phases, against a real stack of its own (tests/fuzz/harness.py).

A short version for ``make test``: one generated case per operation and phase, and
without ``POST /v1/locks/{resource}``, whose generated requests wait up to their
``wait_s`` (60 s) on a lock an earlier case holds. ``make fuzz`` runs everything, 100
cases per operation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TEST_OFFSET
from tests.fuzz.harness import fuzz_stack, run_schemathesis

pytestmark = pytest.mark.integration


def test_schemathesis_finds_no_failures(tmp_path: Path) -> None:
    stack = fuzz_stack(tmp_path / "stack", TEST_OFFSET + 500)
    stack.start()
    try:
        res = run_schemathesis(
            stack, 1, seed=1, report_dir=tmp_path / "report", exclude=("POST /v1/locks/{resource}",)
        )
    finally:
        stack.stop()
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-20000:]
    for phase in ("Examples", "Coverage", "Fuzzing"):
        assert f"✅ {phase}" in out, out[-5000:]  # each phase ran and passed
