"""Benchmarks: each reports a ratio against a baseline measured in the same run."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from swarmd.devstack.launcher import Ports, Stack


@contextlib.contextmanager
def bench_stack(default_offset: int) -> Iterator[Stack]:
    """A started local stack in a temporary data dir (app and daprd as direct processes),
    on the ports of ``SWARMD_BENCH_PORT_OFFSET`` (else ``default_offset``); stopped on
    exit and on SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on SIGTERM too
    offset = int(os.environ.get("SWARMD_BENCH_PORT_OFFSET", str(default_offset)))
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        stack = Stack(data_dir=Path(tmp), ports=Ports.for_tests(offset), app_mode="direct")
        print(f"starting the stack (offset {offset}) ...", flush=True)
        stack.start()
        try:
            yield stack
        finally:
            stack.stop()
