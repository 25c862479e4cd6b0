"""The python tool's sandbox: cold and warm latency per call, and 50 calls at once.

Runs the real sandbox (wasmtime, the pinned CPython WASI build) in this process,
as the app does. Each figure is reported beside a baseline measured in the same
run: the same code in the host's own CPython as a fresh subprocess (``python -I
-S -c``), i.e. what "just run it" would cost without any isolation. CPU is this
process's (user+sys, all threads) per phase.

* compile: the interpreter compiled from its .wasm (what a machine pays once;
  the result is cached on disk, and the image build does it ahead of time).
* cold: a new Sandbox (engine, module from the on-disk cache, linker) and its
  first call, i.e. the first python call of a new process.
* warm: further calls on the same Sandbox (median and p95 of ``--calls``).
* concurrent: ``--concurrent`` calls submitted at once from the event loop, on
  ``--workers`` threads, with the loop's heartbeat lag while they run.

    .venv/bin/python -m bench.sandbox [--calls 30] [--concurrent 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from swarmd.activities.sandbox import Sandbox, SandboxLimits
from swarmd.config import Settings

CODE = "print(sum(i * i for i in range(1000)))"
T = TypeVar("T")


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    c0, t0 = cpu(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, cpu() - c0


def host_call() -> None:
    subprocess.run([sys.executable, "-I", "-S", "-c", CODE], check=True, capture_output=True)


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]


async def concurrent(sb: Sandbox, n: int) -> tuple[list[float], float]:
    """Per-call latencies (submit to result) and the worst event-loop lag seen."""
    lag = 0.0
    done = False

    async def heartbeat() -> None:
        nonlocal lag
        while not done:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lag = max(lag, time.perf_counter() - t - 0.01)

    async def one() -> float:
        t = time.perf_counter()
        r = await sb.run(CODE)
        if r.exit_code != 0:
            raise RuntimeError(f"sandbox call failed: {r}")
        return time.perf_counter() - t

    beat = asyncio.create_task(heartbeat())
    lat = await asyncio.gather(*[one() for _ in range(n)])
    done = True
    await beat
    return list(lat), lag


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--concurrent", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-compile", action="store_true", help="do not measure a fresh compile")
    a = p.parse_args()
    limits = SandboxLimits()
    cache = Settings().sandbox_cache_dir
    rows: list[tuple[str, str, str, str]] = []

    if not a.skip_compile:
        with tempfile.TemporaryDirectory() as d:
            sb = Sandbox(limits, workers=a.workers, cache_dir=Path(d))
            _, wall, c = timed(sb.warm)
            sb.close()
        rows.append(
            ("compile the interpreter (once per machine)", f"{wall:.1f} s", f"{c:.1f} s", "-")
        )

    _, host_wall, host_cpu = timed(host_call)  # first host start (page cache warm after)
    host = [timed(host_call)[1] for _ in range(a.calls)]
    host_med = statistics.median(host)

    def cold() -> None:
        sb = Sandbox(limits, workers=a.workers, cache_dir=cache)
        sb.run_sync(CODE)
        sb.close()

    cold()  # make sure the cache holds this build before timing a cold start
    _, cold_wall, cold_cpu = timed(cold)
    rows.append(
        (
            "cold: new process's first call",
            f"{cold_wall * 1000:.0f} ms",
            f"{cold_cpu * 1000:.0f} ms",
            f"{cold_wall / host_med:.1f}x",
        )
    )

    sb = Sandbox(limits, workers=a.workers, cache_dir=cache)
    sb.warm()
    warm: list[float] = []
    c0 = cpu()
    for _ in range(a.calls):
        warm.append(timed(lambda: sb.run_sync(CODE))[1])
    warm_cpu = (cpu() - c0) / a.calls
    rows.append(
        (
            f"warm: median of {a.calls}",
            f"{statistics.median(warm) * 1000:.0f} ms",
            f"{warm_cpu * 1000:.0f} ms",
            f"{statistics.median(warm) / host_med:.2f}x",
        )
    )
    rows.append((f"warm: p95 of {a.calls}", f"{p95(warm) * 1000:.0f} ms", "-", "-"))

    c0, t0 = cpu(), time.perf_counter()
    lat, lag = asyncio.run(concurrent(sb, a.concurrent))
    wall, ccpu = time.perf_counter() - t0, cpu() - c0
    sb.close()
    rows.append(
        (
            f"{a.concurrent} at once on {a.workers} threads: all done",
            f"{wall:.2f} s",
            f"{ccpu:.2f} s",
            f"{wall / (host_med * a.concurrent):.2f}x",
        )
    )
    rows.append(
        (
            f"{a.concurrent} at once: median / max per call",
            f"{statistics.median(lat) * 1000:.0f} / {max(lat) * 1000:.0f} ms",
            "-",
            "-",
        )
    )
    rows.append((f"{a.concurrent} at once: worst event-loop lag", f"{lag * 1000:.1f} ms", "-", "-"))

    print(
        f"baseline: host CPython subprocess, median of {a.calls}: {host_med * 1000:.0f} ms "
        f"(first {host_wall * 1000:.0f} ms, {host_cpu * 1000:.0f} ms CPU in children not counted)"
    )
    print("| case | wall | CPU (this process) | vs. host subprocess |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
