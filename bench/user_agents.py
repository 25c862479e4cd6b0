"""Per-user agents: the cost of idle agents, and message throughput and latency under
concurrent users, two workflow versions in the same run (default v2 against v3, whose
fast path answers a message in the app as it arrives).

On the real local stack (app and daprd as direct processes, the model server at
zero latency, so model time is out of the numbers). Steps, in one run:

1. The gateway alone: ``--gateway-calls`` chat completions straight through the
   LiteLLM proxy from one ``asyncio`` client, ``--concurrent`` in flight: calls/s
   and CPU per call by process. Any message costs at least one such call, so
   this is the stack's ceiling for messages/s.
2. For each version in ``--versions`` (default ``v2,v3``; the app is redeployed
   between them with ``SWARMD_USER_AGENT_VERSION``, as an upgrade is):
   a warm-up user (code paths loaded) whose latency alone is the single-user
   baseline, then ``--concurrent`` fresh users each send one untimed message
   and then ``--messages`` messages one after another. Latency of a message =
   its ``answered_at - created_at`` as the app recorded them (queue, workflow
   steps, the LLM call through the proxy, the reply stored): p50/p99;
   throughput = messages / wall time; CPU per message by process. That is a
   closed loop: with no pause between a reply and the next message, the p50 is
   ~ users / throughput by Little's law, whatever the stack. ``--rate R`` adds an
   open-loop phase: the same messages sent at R per second in all, round-robin
   over the users, each on time whether or not the user's last one was answered
   (``paced`` in the output: throughput, p50/p99, CPU per message).
3. Idle agents, before the first version's users: ``--users`` agents (default
   1,000) provisioned and left idle: the app's RSS, its CPU over ``--idle-s``
   seconds, the state store's size on disk; per idle agent.
4. After the last version: every user of the first version sends one more
   message, answered by the new version (the upgrade keeps agents working).

    .venv/bin/python -m bench.user_agents [--users 1000] [--concurrent 50] [--messages 4]
        [--versions v2,v3] [--rate 30] [--profile]

``--rate`` defaults to 30 (the per-user target's load); ``--rate 0`` skips it.

``--profile`` records the app with py-spy during each version's concurrent phase
(``bench/results/user_agents-<version>.pyspy``, collapsed stacks). Port offset:
``SWARMD_BENCH_PORT_OFFSET`` (default 7500). Writes ``bench/results/user_agents.json``.
"""

from __future__ import annotations

import argparse
import asyncio
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
from openai import AsyncOpenAI

from bench.profiling import py_spy
from swarmd.devstack.launcher import Ports, Stack

RESULTS = Path(__file__).resolve().parent / "results"
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


class CpuSplit:
    """CPU seconds each process of the stack (and this client) spends over a phase."""

    def __init__(self, stack: Stack) -> None:
        self.pgids = {n: p.popen.pid for n, p in stack.procs.items()}
        self.before = {n: cpu_s(g) for n, g in self.pgids.items()}
        self.own = time.process_time()

    def per(self, n: int) -> dict[str, float]:
        """Milliseconds of CPU per unit of work, by process, for ``n`` units."""
        out = {
            name: round((cpu_s(g) - self.before[name]) / n * 1000, 1)
            for name, g in self.pgids.items()
        }
        out["bench_client"] = round((time.process_time() - self.own) / n * 1000, 1)
        out["total"] = round(sum(out.values()), 1)
        return out


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


def send(api: httpx.Client, user: str, text: str) -> str:
    """POST one message (waiting out a per-user 429); its message id."""
    while True:  # a user token may be told to wait (per-user limits: 429, Retry-After)
        r = api.post(f"/v1/agents/{user}/messages", json={"text": text})
        if r.status_code != 429:
            break
        time.sleep(float(r.headers.get("retry-after", "1")))
    r.raise_for_status()
    return str(r.json()["message_id"])


def answered(api: httpx.Client, user: str, mid: str, deadline: float) -> float:
    """Wait (long polls) until message ``mid`` is final; its latency."""
    while True:
        m = api.get(f"/v1/agents/{user}/messages/{mid}", params={"wait_s": 10}).json()
        if m["status"] in FINAL:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{user}/{mid} not answered in time: {m}")
    if m["status"] != "answered":
        raise RuntimeError(f"{user}/{mid}: {m}")
    return latency_s(m)


def converse(api: httpx.Client, user: str, n: int, timeout_s: float = 300) -> list[float]:
    deadline = time.monotonic() + timeout_s
    return [
        answered(api, user, send(api, user, f"question {i} from {user}"), deadline)
        for i in range(n)
    ]


def paced(
    api: httpx.Client, users: list[str], per_user: int, rate: float, timeout_s: float = 300
) -> tuple[list[float], float]:
    """Open loop: ``len(users) * per_user`` messages sent at ``rate`` per second in all,
    round-robin over the users, each sent on time whether or not the user's last one
    was answered (a user's messages are answered in order). Latencies, and the wall
    time from the first send to the last answer."""
    total = len(users) * per_user
    t0 = time.monotonic() + 0.2
    deadline = t0 + total / rate + timeout_s

    def one(j: int) -> float:
        user = users[j % len(users)]
        time.sleep(max(0.0, t0 + j / rate - time.monotonic()))
        return answered(api, user, send(api, user, f"paced {j} from {user}"), deadline)

    with ThreadPoolExecutor(total) as pool:
        lats = list(pool.map(one, range(total)))
    return lats, time.monotonic() - t0


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


def provision(api: httpx.Client, users: list[str]) -> float:
    def prov(u: str) -> None:
        r = api.post("/v1/agents", json={"user_id": u, "template": "manager"})
        r.raise_for_status()

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(prov, users))
    return time.monotonic() - t0


def deploy(stack: Stack, version: str) -> None:
    """Replace the app with one whose new user-agent generations run ``version``."""
    stack.kill("app", sig=signal.SIGTERM)  # graceful, as a rolling update
    stack.app_env["SWARMD_USER_AGENT_VERSION"] = version
    stack.restart_app()
    stack.wait_app_ready(stack.procs["app"])


def gateway_only(stack: Stack, calls: int, concurrent: int) -> dict[str, Any]:
    """``calls`` completions through the proxy, ``concurrent`` in flight, one client."""
    client = AsyncOpenAI(
        base_url=f"http://127.0.0.1:{stack.ports.litellm}/v1",
        api_key=stack.gateway_key,
        max_retries=0,
        timeout=120,
    )
    sem = asyncio.Semaphore(concurrent)

    async def one(i: int) -> None:
        async with sem:
            await client.chat.completions.create(
                model="swarmd-fast", messages=[{"role": "user", "content": f"gateway call {i}"}]
            )

    async def run() -> float:
        await one(-1)
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        wall = time.perf_counter() - t0
        await client.close()
        return wall

    split = CpuSplit(stack)
    wall = asyncio.run(run())
    return {
        "calls": calls,
        "concurrent": concurrent,
        "calls_per_s": round(calls / wall, 1),
        "cpu_ms_per_call_by_process": split.per(calls),
    }


def concurrent_phase(
    stack: Stack, api: httpx.Client, version: str, users: list[str], args: Any
) -> dict[str, Any]:
    print(f"[{version}] warm-up and single-user baseline ...", flush=True)
    warm = f"warm-{version}"
    provision(api, [warm])
    converse(api, warm, 3)
    base_lat = converse(api, warm, 10)
    provision(api, users)
    wait_idle(api, users)
    with ThreadPoolExecutor(len(users)) as pool:  # one untimed message each (code paths)
        list(pool.map(lambda u: converse(api, u, 1), users))
    wait_idle(api, users)
    spy = (
        py_spy(stack.procs["app"].popen.pid, RESULTS / f"user_agents-{version}.pyspy", rate=100)
        if args.profile
        else None
    )
    split = CpuSplit(stack)
    t1 = time.monotonic()
    with ThreadPoolExecutor(len(users)) as pool:
        lats = [x for xs in pool.map(lambda u: converse(api, u, args.messages), users) for x in xs]
    wall = time.monotonic() - t1
    cpu = split.per(len(lats))
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    out = {
        "version": version,
        "concurrent_users": len(users),
        "messages": len(lats),
        "wall_s": round(wall, 2),
        "throughput_msgs_per_s": round(len(lats) / wall, 1),
        "p50_ms": round(statistics.median(lats) * 1000, 1),
        "p99_ms": round(pct(lats, 99) * 1000, 1),
        "single_user_p50_ms": round(statistics.median(base_lat) * 1000, 1),
        "p50_ratio_vs_single_user": round(statistics.median(lats) / statistics.median(base_lat), 2),
        "cpu_ms_per_message_by_process": cpu,
    }
    if args.rate:
        wait_idle(api, users)
        split = CpuSplit(stack)
        limits = httpx.Limits(max_connections=len(users) * args.messages + 10)
        with httpx.Client(
            base_url=api.base_url, headers=api.headers, timeout=60, limits=limits
        ) as wide:
            lats, wall = paced(wide, users, args.messages, args.rate)
        out["paced"] = {
            "offered_msgs_per_s": args.rate,
            "messages": len(lats),
            "throughput_msgs_per_s": round(len(lats) / wall, 1),
            "p50_ms": round(statistics.median(lats) * 1000, 1),
            "p99_ms": round(pct(lats, 99) * 1000, 1),
            "cpu_ms_per_message_by_process": split.per(len(lats)),
        }
    print(json.dumps(out), flush=True)
    return out


def upgraded(api: httpx.Client, users: list[str], versions: list[str]) -> dict[str, Any]:
    """One more message from each of ``users`` (agents of the first version)."""
    with ThreadPoolExecutor(len(users)) as pool:
        answered = sum(len(x) for x in pool.map(lambda u: converse(api, u, 1), users))
    return {"from": versions[0], "to": versions[-1], "users": len(users), "answered": answered}


def idle_phase(stack: Stack, api: httpx.Client, data_dir: Path, args: Any) -> dict[str, Any]:
    app = stack.procs["app"].popen.pid
    rss0, db0 = rss_bytes(app), store_bytes(data_dir)
    c0 = cpu_s(app)
    time.sleep(args.idle_s)
    idle_cpu0 = cpu_s(app) - c0
    n = args.users
    users = [f"idle-{i:05d}" for i in range(n)]
    prov_s = provision(api, users)
    print(f"provisioned {n} in {prov_s:.1f}s", flush=True)
    wait_idle(api, users)
    rss1, db1 = rss_bytes(app), store_bytes(data_dir)
    c1 = cpu_s(app)
    time.sleep(args.idle_s)
    idle_cpu1 = cpu_s(app) - c1
    print(f"{n} idle agents: RSS {rss1 / 2**20:.1f} MiB", flush=True)
    return {
        "provision": {"users": n, "seconds": round(prov_s, 2), "per_s": round(n / prov_s, 1)},
        "rss": {
            "baseline_mib": round(rss0 / 2**20, 1),
            "with_idle_agents_mib": round(rss1 / 2**20, 1),
            "ratio": round(rss1 / rss0, 3),
            "per_idle_agent_kib": round((rss1 - rss0) / n / 1024, 2),
        },
        "idle_cpu": {
            "window_s": args.idle_s,
            "baseline_cpu_s": round(idle_cpu0, 3),
            "with_idle_agents_cpu_s": round(idle_cpu1, 3),
            "per_idle_agent_cpu_ms_per_min": round(
                max(0.0, idle_cpu1 - idle_cpu0) / n / args.idle_s * 60 * 1000, 4
            ),
        },
        "state_store": {"per_agent_bytes": round((db1 - db0) / n)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1000, help="idle agents to provision")
    ap.add_argument("--concurrent", type=int, default=50)
    ap.add_argument("--messages", type=int, default=4, help="messages per concurrent user")
    ap.add_argument("--idle-s", type=float, default=20.0, help="CPU sampling window when idle")
    ap.add_argument("--versions", default="v2,v3", help="workflow versions, in deploy order")
    ap.add_argument("--gateway-calls", type=int, default=400)
    ap.add_argument("--profile", action="store_true", help="py-spy the app (see above)")
    ap.add_argument(
        "--rate",
        type=float,
        default=30.0,
        help="then an open-loop phase per version: the same number of messages sent at "
        "this many per second in all, round-robin over the users (0: none)",
    )
    args = ap.parse_args(argv)
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on SIGTERM too
    offset = int(os.environ.get("SWARMD_BENCH_PORT_OFFSET", "7500"))
    res: dict[str, Any] = {"machine_cores": os.cpu_count(), "args": vars(args)}
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        stack = Stack(
            data_dir=Path(tmp),
            ports=Ports.for_tests(offset),
            app_mode="direct",
            app_env={"SWARMD_USER_AGENT_VERSION": versions[0]},
        )
        print(f"starting the stack (offset {offset}) ...", flush=True)
        stack.start()
        try:
            headers = {"Authorization": f"Bearer {stack.api_token}"}
            with httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as api:
                res["gateway_only"] = gateway_only(stack, args.gateway_calls, args.concurrent)
                print(json.dumps({"gateway_only": res["gateway_only"]}), flush=True)
                if args.users:
                    provision(api, ["warm-idle"])
                    converse(api, "warm-idle", 3)
                    res.update(idle_phase(stack, api, Path(tmp), args))
                phases = {}
                cohorts: dict[str, list[str]] = {}
                for i, v in enumerate(versions):
                    if i:
                        print(f"deploying {v} ...", flush=True)
                        deploy(stack, v)
                    cohorts[v] = [f"{v}-{j:03d}" for j in range(args.concurrent)]
                    phases[v] = concurrent_phase(stack, api, v, cohorts[v], args)
                if len(versions) > 1:  # the first cohort, upgraded: still answered
                    res["upgraded"] = upgraded(api, cohorts[versions[0]], versions)
        finally:
            stack.stop()
    last = phases[versions[-1]]
    res["by_version"] = phases
    res["latency"] = {  # the last version's figures, under the field names of earlier runs
        **{k: v for k, v in last.items() if k not in ("version", "wall_s")},
    }
    if len(versions) > 1:
        first = phases[versions[0]]
        res["ratios"] = {
            "throughput_new_over_old": round(
                last["throughput_msgs_per_s"] / first["throughput_msgs_per_s"], 2
            ),
            "p50_new_over_old": round(last["p50_ms"] / first["p50_ms"], 3),
            "cpu_per_message_new_over_old": round(
                last["cpu_ms_per_message_by_process"]["total"]
                / first["cpu_ms_per_message_by_process"]["total"],
                3,
            ),
        }
    (RESULTS / "user_agents.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
