"""Per-user agents: the cost of idle agents and message latency under 50 concurrent users.

On the real local stack (app and daprd as direct processes, the model server at
zero latency, so model time is out of the numbers). Steps, in one run:

1. Warm up: one user, a few messages (code paths loaded). Baselines measured
   here: the app's RSS and CPU with no idle agents, and the latency of one
   user messaging alone.
2. Provision ``--users`` agents (default 1,000) and wait until they are idle.
   Measured: the app's RSS, its CPU over ``--idle-s`` seconds, the state store's
   size on disk; per idle agent: RSS, CPU and bytes.
3. ``--concurrent`` users (default 50) each send ``--messages`` messages one
   after another. Latency of a message = its ``answered_at - created_at`` as the
   app recorded them (queue, workflow steps, the agent loop's LLM call through the
   LiteLLM proxy, the reply stored): p50/p99, and as a ratio of the single-user
   baseline.

    .venv/bin/python -m bench.user_agents [--users 1000] [--concurrent 50] [--messages 4]

Port offset: ``SWARMD_BENCH_PORT_OFFSET`` (default 7500). Writes
``bench/results/user_agents.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from swarmd.devstack.launcher import Ports, Stack

RESULTS = Path(__file__).resolve().parent / "results" / "user_agents.json"
FINAL = ("answered", "failed", "budget_exhausted")


def group_pids(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    pids.append(int(d.name))
            except ProcessLookupError:
                continue
    return pids


def rss_bytes(pgid: int) -> int:
    total = 0
    for pid in group_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def cpu_s(pgid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
    return total


def store_bytes(data_dir: Path) -> int:
    """The SQLite state store on disk, its write-ahead log included."""
    return sum(p.stat().st_size for p in (data_dir / "app").glob("swarmd-state.db*"))


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def latency_s(msg: dict[str, Any]) -> float:
    a = datetime.fromisoformat(msg["answered_at"])
    c = datetime.fromisoformat(msg["created_at"])
    return (a - c).total_seconds()


def converse(api: httpx.Client, user: str, n: int, timeout_s: float = 300) -> list[float]:
    out = []
    deadline = time.monotonic() + timeout_s
    for i in range(n):
        r = api.post(f"/v1/agents/{user}/messages", json={"text": f"question {i} from {user}"})
        r.raise_for_status()
        mid = r.json()["message_id"]
        while True:
            m = api.get(f"/v1/agents/{user}/messages/{mid}", params={"wait_s": 10}).json()
            if m["status"] in FINAL:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{user}/{mid} not answered after {timeout_s}s: {m}")
        if m["status"] != "answered":
            raise RuntimeError(f"{user}/{mid}: {m}")
        out.append(latency_s(m))
    return out


def wait_idle(api: httpx.Client, users: list[str], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(users)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} agents not idle after {timeout_s}s")
        pending = [
            u for u in pending if api.get(f"/v1/agents/{u}").json()["workflow"]["phase"] != "idle"
        ]
        if pending:
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--messages", type=int, default=4, help="messages per concurrent user")
    ap.add_argument("--idle-s", type=float, default=20.0, help="CPU sampling window when idle")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on SIGTERM too
    offset = int(os.environ.get("SWARMD_BENCH_PORT_OFFSET", "7500"))
    res: dict[str, Any] = {"machine_cores": os.cpu_count(), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        stack = Stack(data_dir=Path(tmp), ports=Ports.for_tests(offset), app_mode="direct")
        print(f"starting the stack (offset {offset}) ...", flush=True)
        stack.start()
        try:
            app = stack.procs["app"].popen.pid
            headers = {"Authorization": f"Bearer {stack.api_token}"}
            with httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as api:
                api.post("/v1/agents", json={"user_id": "warmup", "template": "manager"})
                converse(api, "warmup", 3)
                base_lat = converse(api, "warmup", 10)
                wait_idle(api, ["warmup"])
                rss0, db0 = rss_bytes(app), store_bytes(Path(tmp))
                c0 = cpu_s(app)
                time.sleep(args.idle_s)
                idle_cpu0 = cpu_s(app) - c0
                print(
                    f"baseline: RSS {rss0 / 2**20:.1f} MiB, single-user p50 "
                    f"{statistics.median(base_lat) * 1000:.0f} ms",
                    flush=True,
                )

                users = [f"bench-{i:05d}" for i in range(args.users)]
                t0 = time.monotonic()

                def prov(u: str) -> None:
                    r = api.post("/v1/agents", json={"user_id": u, "template": "manager"})
                    r.raise_for_status()

                with ThreadPoolExecutor(16) as pool:
                    list(pool.map(prov, users))
                prov_s = time.monotonic() - t0
                print(f"provisioned {args.users} in {prov_s:.1f}s", flush=True)
                wait_idle(api, users)
                rss1, db1 = rss_bytes(app), store_bytes(Path(tmp))
                c1 = cpu_s(app)
                time.sleep(args.idle_s)
                idle_cpu1 = cpu_s(app) - c1
                print(f"{args.users} idle agents: RSS {rss1 / 2**20:.1f} MiB", flush=True)

                active = users[: args.concurrent]
                pgids = {n: p.popen.pid for n, p in stack.procs.items()}
                cpu_before = {n: cpu_s(g) for n, g in pgids.items()}
                own_before = time.process_time()
                t1 = time.monotonic()
                with ThreadPoolExecutor(args.concurrent) as pool:
                    lats = [
                        x
                        for xs in pool.map(lambda u: converse(api, u, args.messages), active)
                        for x in xs
                    ]
                wall = time.monotonic() - t1
                cpu_msg = {
                    n: round((cpu_s(g) - cpu_before[n]) / len(lats) * 1000, 1)
                    for n, g in pgids.items()
                }
                cpu_msg["bench_client"] = round(
                    (time.process_time() - own_before) / len(lats) * 1000, 1
                )
        finally:
            stack.stop()
    n = args.users
    res.update(
        provision={"users": n, "seconds": round(prov_s, 2), "per_s": round(n / prov_s, 1)},
        rss={
            "baseline_mib": round(rss0 / 2**20, 1),
            "with_idle_agents_mib": round(rss1 / 2**20, 1),
            "ratio": round(rss1 / rss0, 3),
            "per_idle_agent_kib": round((rss1 - rss0) / n / 1024, 2),
        },
        idle_cpu={
            "window_s": args.idle_s,
            "baseline_cpu_s": round(idle_cpu0, 3),
            "with_idle_agents_cpu_s": round(idle_cpu1, 3),
            "per_idle_agent_cpu_ms_per_min": round(
                max(0.0, idle_cpu1 - idle_cpu0) / n / args.idle_s * 60 * 1000, 4
            ),
        },
        state_store={"per_agent_bytes": round((db1 - db0) / n)},
        latency={
            "concurrent_users": args.concurrent,
            "messages": len(lats),
            "p50_ms": round(statistics.median(lats) * 1000, 1),
            "p99_ms": round(pct(lats, 99) * 1000, 1),
            "single_user_p50_ms": round(statistics.median(base_lat) * 1000, 1),
            "p50_ratio_vs_single_user": round(
                statistics.median(lats) / statistics.median(base_lat), 2
            ),
            "throughput_msgs_per_s": round(len(lats) / wall, 1),
            "cpu_ms_per_message_by_process": cpu_msg,
        },
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
