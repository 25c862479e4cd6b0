"""Fair sharing between users: does one heavy user slow everyone else down?

On the real local stack (app and daprd as direct processes, the model server
answering after ``--latency-ms``), every user with its own token and agent:

1. **Baseline** (heavy user absent): ``--light`` users (default 20) each send
   ``--messages`` (default 3) messages to their agent, one after another, all
   users at once.
2. **Contended**: one heavy user sends ``--heavy`` (default 200) messages as fast
   as the API lets it (it honours 429's ``Retry-After``: at most
   ``SWARMD_USER_MAX_TURNS`` in flight and the start rate), and while its queue
   is full the light users repeat step 1.

``--limits raised`` sets the per-user limits above ``--heavy``, so all of the heavy
user's messages are accepted at once and queued: what is left to protect the
others is the scheduling itself (each agent answers one message at a time).

Latency of a message = ``answered_at - created_at`` as the app recorded them
(queue, workflow steps, the agent loop's LLM call through LiteLLM, the reply
stored). Reported: the light users' p50/p99 in each phase, the ratio contended /
baseline (the claim: at most 2x), the heavy user's accepted and refused sends,
and CPU per process and phase.

    .venv/bin/python -m bench.fairness [--light 20] [--messages 3] [--heavy 200]
        [--limits default|raised]

Port offset: ``SWARMD_BENCH_PORT_OFFSET`` (default 8100). Writes
``bench/results/fairness.json`` (``fairness-raised.json`` with ``--limits raised``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.user_agents import converse, cpu_s, pct
from swarmd.devstack.launcher import Ports, Stack

RESULTS = Path(__file__).resolve().parent / "results"


class Heavy(threading.Thread):
    """Sends ``n`` messages as fast as the API accepts them."""

    def __init__(self, c: httpx.Client, user: str, n: int) -> None:
        super().__init__(daemon=True)
        self.c, self.user, self.n = c, user, n
        self.accepted: list[str] = []
        self.refused: dict[str, int] = {}
        #: set at the first refusal (its queue is full) or once all ``n`` are accepted
        self.full = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        while len(self.accepted) < self.n and not self.stop.is_set():
            r = self.c.post(f"/v1/agents/{self.user}/messages", json={"text": "heavy load"})
            if r.status_code == 202:
                self.accepted.append(r.json()["message_id"])
                if len(self.accepted) == self.n:
                    self.full.set()
                continue
            if r.status_code != 429:
                r.raise_for_status()
            limit = r.json()["error"]["limit"]
            self.refused[limit] = self.refused.get(limit, 0) + 1
            self.full.set()
            self.stop.wait(float(r.headers.get("retry-after", "1")))


def answered(c: httpx.Client, user: str) -> int:
    """How many of ``user``'s messages are answered (the newest 200 looked at)."""
    msgs = c.get(f"/v1/agents/{user}/messages", params={"limit": 200}).json()["messages"]
    return sum(1 for m in msgs if m["status"] == "answered")


def measure(stack: Stack, fn: Any) -> tuple[Any, float, dict[str, float]]:
    pgids = {n: p.popen.pid for n, p in stack.procs.items()}
    before = {n: cpu_s(g) for n, g in pgids.items()}
    t0 = time.monotonic()
    out = fn()
    wall = time.monotonic() - t0
    return out, wall, {n: round(cpu_s(g) - before[n], 2) for n, g in pgids.items()}


def summary(lats: list[float], wall: float, cpu: dict[str, float]) -> dict[str, Any]:
    return {
        "messages": len(lats),
        "p50_ms": round(statistics.median(lats) * 1000, 1),
        "p99_ms": round(pct(lats, 99) * 1000, 1),
        "wall_s": round(wall, 2),
        "cpu_s_by_process": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--light", type=int, default=20, help="light users")
    ap.add_argument("--messages", type=int, default=3, help="messages per light user")
    ap.add_argument("--heavy", type=int, default=200, help="messages of the heavy user")
    ap.add_argument("--latency-ms", type=int, default=100, help="model latency per call")
    ap.add_argument(
        "--limits",
        choices=("default", "raised"),
        default="default",
        help="per-user limits: the defaults, or raised above --heavy (all queued at once)",
    )
    args = ap.parse_args(argv)
    app_env: dict[str, str] = {}
    if args.limits == "raised":
        above = str(args.heavy + 10)
        app_env = {
            "SWARMD_USER_MAX_TURNS": above,
            "SWARMD_USER_START_BURST": above,
            "SWARMD_USER_STARTS_PER_MINUTE": "6000",
        }
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on SIGTERM too
    offset = int(os.environ.get("SWARMD_BENCH_PORT_OFFSET", "8100"))
    res: dict[str, Any] = {
        "machine_cores": os.cpu_count(),
        "args": vars(args),
        "app_env": app_env,
        "load_avg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-") as tmp:
        stack = Stack(
            data_dir=Path(tmp),
            ports=Ports.for_tests(offset),
            app_mode="direct",
            model_latency_ms=args.latency_ms,
            app_env=app_env,
        )
        print(f"starting the stack (offset {offset}) ...", flush=True)
        stack.start()
        try:
            op = {"Authorization": f"Bearer {stack.api_token}"}
            with httpx.Client(base_url=stack.api_url, headers=op, timeout=60) as api:
                light = [f"light-{i:02d}" for i in range(args.light)]
                heavy = "heavy"
                clients: dict[str, httpx.Client] = {}
                for u in [*light, heavy, "warmup"]:
                    api.post("/v1/agents", json={"user_id": u, "template": "manager"})
                    tok = api.post(f"/v1/users/{u}/tokens").json()["token"]
                    clients[u] = httpx.Client(
                        base_url=stack.api_url,
                        headers={"Authorization": f"Bearer {tok}"},
                        timeout=60,
                    )
                converse(clients["warmup"], "warmup", 3)

                def light_phase() -> list[float]:
                    with ThreadPoolExecutor(len(light)) as pool:
                        runs = pool.map(lambda u: converse(clients[u], u, args.messages), light)
                        return [x for xs in runs for x in xs]

                base, base_wall, base_cpu = measure(stack, light_phase)
                print(f"baseline p50 {statistics.median(base) * 1000:.0f} ms", flush=True)
                h = Heavy(clients[heavy], heavy, args.heavy)
                h.start()
                if not h.full.wait(120):
                    raise RuntimeError("the heavy user's queue never filled up")
                heavy_done_before = answered(api, heavy)
                cont, cont_wall, cont_cpu = measure(stack, light_phase)
                backlog = len(h.accepted)
                heavy_done = answered(api, heavy) - heavy_done_before
                h.stop.set()
                h.join(30)
                print(f"contended p50 {statistics.median(cont) * 1000:.0f} ms", flush=True)
                for c in clients.values():
                    c.close()
        finally:
            stack.stop()
    res.update(
        baseline=summary(base, base_wall, base_cpu),
        contended=summary(cont, cont_wall, cont_cpu),
        heavy={
            "accepted_by_phase_end": backlog,
            "answered_during_phase": heavy_done,
            "refused_by_limit": h.refused,
        },
        p50_ratio_contended_vs_baseline=round(statistics.median(cont) / statistics.median(base), 2),
        p99_ratio_contended_vs_baseline=round(pct(cont, 99) / pct(base, 99), 2),
    )
    res["load_avg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    name = "fairness.json" if args.limits == "default" else "fairness-raised.json"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
