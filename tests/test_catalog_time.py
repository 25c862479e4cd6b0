"""The run catalog's time filter agrees with the times it shows: a run asked for with
its own ``created_at`` as ``started_after`` is always in the answer (inclusive)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from swarmd.engine.catalog import _us


def test_a_shown_start_time_reads_back_to_the_same_microsecond() -> None:
    rnd = random.Random(7)
    for _ in range(50_000):
        t = 1_796_000_000 + rnd.random() * 10_000_000
        shown = datetime.fromtimestamp(t, UTC).isoformat()
        assert _us(datetime.fromisoformat(shown).timestamp()) == _us(t), shown
