"""Topic-started vs HTTP-started runs: throughput of the same tiny runs either way.

On the real local stack (app and daprd as direct processes, Redis Streams as the
broker, the model server at zero latency). The run is a one-agent pipeline (one
child workflow, one LLM call through the LiteLLM proxy), so what differs between
the two ways in is the intake, not the swarm. In one run, after a warm-up:

1. **HTTP** (the baseline): ``--runs`` ``POST /v1/runs`` from 8 client threads.
2. **Topic**: the same number of tasks published to ``pubsub/swarm.tasks``
   through daprd's publish API (from one client thread; daprd answers once the
   broker has the message), started by the subscriber under its backpressure
   limit (``SWARMD_PUBSUB_MAX_IN_FLIGHT``, default 64).

Both are timed from the first request to the last run's result event on
``swarm.results`` (the outbox publishes one for every run, however it started),
so the end is detected the same way. Reported: runs/s, the topic/HTTP ratio, and
CPU seconds per process per run.

    .venv/bin/python -m bench.pubsub [--runs 300]

Port offset: ``SWARMD_BENCH_PORT_OFFSET`` (default 7700). Writes
``bench/results/pubsub.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import bench_stack
from bench.user_agents import cpu_s
from swarmd.devstack.launcher import Stack

RESULTS = Path(__file__).resolve().parent / "results" / "pubsub.json"
TINY = {"name": "tiny", "pattern": "pipeline", "agents": [{"name": "solo", "role": "Be brief."}]}


def body(user: str, i: int) -> dict[str, Any]:
    return {"spec": TINY, "run_id": f"{user}-{i}", "input": {"task": f"task {i}", "user": user}}


def results_for(broker: redis.Redis, user: str) -> set[str]:
    ids = set()
    for _, fields in broker.xrange("swarm.results") or []:
        data = json.loads((fields or {})[b"data"])["data"]
        if data.get("user") == user:
            ids.add(data["run_id"])
    return ids


def timed(
    stack: Stack, broker: redis.Redis, user: str, n: int, send: Callable[[int], None]
) -> dict[str, Any]:
    groups = {name: p.popen.pid for name, p in stack.procs.items()}
    cpu0 = {name: cpu_s(g) for name, g in groups.items()}
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(n)))
    sent_s = time.monotonic() - t0
    deadline = t0 + 1800
    while len(done := results_for(broker, user)) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"{user}: only {len(done)} of {n} runs reported")
        time.sleep(0.2)  # polling interval of the broker read, not a readiness sleep
    wall = time.monotonic() - t0
    cpu = {name: round((cpu_s(g) - cpu0[name]) / n * 1000, 1) for name, g in groups.items()}
    return {
        "runs": n,
        "wall_s": round(wall, 2),
        "runs_per_s": round(n / wall, 2),
        "requests_s": round(sent_s, 2),
        "cpu_ms_per_run": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args(argv)
    res: dict[str, Any] = {"machine_cores": os.cpu_count(), "args": vars(args)}
    with bench_stack(7700) as stack, redis.Redis(port=stack.ports.redis) as broker:
        headers = {"Authorization": f"Bearer {stack.api_token}"}
        with httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as api:

            def http(user: str) -> Callable[[int], None]:
                def send(i: int) -> None:
                    r = api.post("/v1/runs", json=body(user, i))
                    assert r.status_code == 202, r.text

                return send

            def topic(user: str) -> Callable[[int], None]:
                url = f"{stack.dapr_url}/v1.0/publish/pubsub/swarm.tasks"

                def send(i: int) -> None:
                    r = httpx.post(url, json=body(user, i), timeout=60)
                    assert r.status_code == 204, r.text

                return send

            timed(stack, broker, "warm-http", 20, http("warm-http"))
            timed(stack, broker, "warm-topic", 20, topic("warm-topic"))
            res["http"] = timed(stack, broker, "bench-http", args.runs, http("bench-http"))
            print(f"HTTP:  {res['http']}", flush=True)
            res["topic"] = timed(stack, broker, "bench-topic", args.runs, topic("bench-topic"))
            print(f"topic: {res['topic']}", flush=True)
    res["topic_over_http"] = round(res["topic"]["runs_per_s"] / res["http"]["runs_per_s"], 2)
    print(f"topic / HTTP throughput: {res['topic_over_http']}x", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
