"""Kill-to-release of a SIGKILLed app's lock: with the watchdog vs. the lock TTL.

On the real local stack (daprd, Redis lock store, the app, the watchdog; app
and daprd as direct processes). Each trial: the app takes a lock through
``/v1/locks`` with TTL ``--ttl``; it is SIGKILLed; a contender polls daprd's
lock API every 10 ms until it can take the lock. The baseline, measured in
the same run, is the same trial with the watchdog stopped: the lock is free
only when its TTL runs out.

    .venv/bin/python -m bench.watchdog_reclaim [--trials 10] [--ttl 10]

Port offset: ``SWARMD_BENCH_PORT_OFFSET`` (default 4300).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from swarmd.devstack.launcher import Ports, Stack


def contender_wait(stack: Stack, resource: str, t0: float, limit_s: float) -> float:
    owner = f"bench-contender-{os.getpid()}"
    body = {"resourceId": resource, "lockOwner": owner, "expiryInSeconds": 5}
    with httpx.Client(base_url=stack.dapr_url, timeout=10) as d:
        while time.monotonic() - t0 < limit_s:
            if d.post("/v1.0-alpha1/lock/lockstore", json=body).json()["success"]:
                took = time.monotonic() - t0
                d.post(
                    "/v1.0-alpha1/unlock/lockstore",
                    json={"resourceId": resource, "lockOwner": owner},
                )
                return took
            time.sleep(0.01)
    raise RuntimeError(f"{resource} still held after {limit_s}s")


def trial(stack: Stack, resource: str, ttl: int) -> tuple[float, float]:
    """(kill -> free, take -> kill) in seconds."""
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api:
        r = api.post(f"/v1/locks/{resource}", json={"ttl_s": ttl})
        r.raise_for_status()
    t_take = time.monotonic()
    t0 = time.monotonic()
    stack.kill("app")
    took = contender_wait(stack, resource, t0, limit_s=ttl + 30)
    stack.restart_app()
    return took, t0 - t_take


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--ttl", type=int, default=10, help="lock TTL in seconds (the baseline)")
    args = ap.parse_args(argv)
    offset = int(os.environ.get("SWARMD_BENCH_PORT_OFFSET", "4300"))
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        stack = Stack(data_dir=Path(tmp), ports=Ports.for_tests(offset), app_mode="direct")
        print(f"starting the stack (offset {offset}) ...", flush=True)
        stack.start()
        try:
            with_wd = []
            for i in range(args.trials):
                took, _ = trial(stack, f"bench-{i}", args.ttl)
                with_wd.append(took)
                print(
                    f"  trial {i + 1}/{args.trials}: kill -> free {took * 1000:7.1f} ms", flush=True
                )
            stack.kill("watchdog", signal.SIGTERM)
            base, held_before_kill = trial(stack, "bench-baseline", args.ttl)
            stack.restart_watchdog()
        finally:
            stack.stop()
    med = statistics.median(with_wd)
    p95 = sorted(with_wd)[max(0, round(0.95 * len(with_wd)) - 1)]
    print()
    print(f"lock TTL {args.ttl} s, {args.trials} trials, machine: {os.cpu_count()} cores")
    print(
        f"  with watchdog : kill -> free  median {med * 1000:.0f} ms, "
        f"min {min(with_wd) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {max(with_wd) * 1000:.0f} ms"
    )
    print(
        f"  baseline (no watchdog, TTL): kill -> free {base * 1000:.0f} ms "
        f"(lock held {held_before_kill * 1000:.0f} ms before the kill)"
    )
    print(f"  ratio median / baseline: {med / base:.4f}  ({base / med:.0f}x sooner)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
