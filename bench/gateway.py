"""The LiteLLM gateway alone: its CPU per call, against the model server straight.

Starts only the local model server and the LiteLLM proxy (``gateway/litellm.yaml``,
launched as ``swarmd stack`` launches it) and sends ``--calls`` chat completions,
``--in-flight`` at once, with the openai client the engine uses (aiohttp, no client
retries):

* ``direct``: straight to the model server, the baseline, in the same run;
* every variant of ``--variants``, each through a fresh proxy after ``--warmup`` calls:

  - ``shipped``: the proxy as the stack and the chart run it
    (``PYTHON_GC_THRESHOLD`` = :data:`swarmd.devstack.launcher.GATEWAY_GC_THRESHOLD`);
  - ``python-gc``: the same with Python's default garbage-collector thresholds.

Variants alternate ``--repeat`` times; a row holds the medians and every sample (the
proxy's CPU per call moves by +-15% between runs here). The proxy's CPU is read from
``/proc`` over the measured calls only. ``--profile`` records the first ``shipped``
proxy with py-spy and prints the heaviest LiteLLM functions (their own samples plus
the non-LiteLLM code they call).

Results go to stdout and ``bench/results/gateway.json``: per variant ``calls``,
``in_flight``, ``gateway_wall_s``, ``direct_wall_s``, ``ratio_gateway_over_direct``
(throughput through the proxy over direct), ``gateway_cpu_ms_per_call``,
``gateway_rss_mb``.

    .venv/bin/python -m bench.gateway [--calls 1500] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI, DefaultAioHttpClient

from bench.profiling import py_spy, top_frames
from bench.scatter_gather import cpu_seconds, rss_mb
from swarmd.devstack.launcher import GATEWAY_GC_THRESHOLD, Ports, Stack

RESULTS = Path(__file__).resolve().parent / "results" / "gateway.json"

#: variant -> the proxy's environment on top of the stack's
VARIANTS: dict[str, dict[str, str]] = {
    "shipped": {},
    "python-gc": {"PYTHON_GC_THRESHOLD": ""},
}


async def calls(base_url: str, key: str, model: str, n: int, in_flight: int) -> float:
    """Wall seconds for ``n`` chat completions, ``in_flight`` at once."""
    client = AsyncOpenAI(
        base_url=base_url,
        api_key=key,
        max_retries=0,
        timeout=120,
        http_client=DefaultAioHttpClient(),
    )
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with gate:
            await client.chat.completions.create(
                model=model,
                messages=[
                    {"role": "system", "content": "You are a careful analyst."},
                    {"role": "user", "content": f"Subtask {i}: survey one failure mode"},
                ],
                user="bench-gateway",
            )

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    took = time.perf_counter() - t0
    await client.close()
    return took


def stop(stack: Stack, name: str) -> None:
    proc = stack.procs.pop(name)
    os.killpg(proc.popen.pid, signal.SIGTERM)
    try:
        proc.popen.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)


def measure(
    stack: Stack, variant: str, args: argparse.Namespace, profile: Path | None
) -> dict[str, float]:
    stack.gateway_env = VARIANTS[variant]
    gw = stack.start_gateway()
    try:
        base = f"http://127.0.0.1:{stack.ports.litellm}/v1"
        asyncio.run(calls(base, stack.gateway_key, "swarmd-fast", args.warmup, args.in_flight))
        spy = py_spy(gw.popen.pid, profile, rate=200) if profile is not None else None
        before = cpu_seconds(gw.popen.pid)
        wall = asyncio.run(
            calls(base, stack.gateway_key, "swarmd-fast", args.calls, args.in_flight)
        )
        cpu = cpu_seconds(gw.popen.pid) - before
        rss = rss_mb(gw.popen.pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
    finally:
        stop(stack, "litellm")
    return {"wall": wall, "cpu_ms": 1000 * cpu / args.calls, "rss": rss}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1500)
    ap.add_argument("--in-flight", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--profile", action="store_true", help="py-spy the first shipped proxy")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"--variants: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    slot = int(os.environ.get("SWARMD_BENCH_PORT_OFFSET", "4400"))
    samples: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    directs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-gw-") as tmp:
        stack = Stack(data_dir=Path(tmp), ports=Ports.for_tests(slot))
        stack.start_model_server()
        profile = Path(tmp) / "litellm.collapsed" if args.profile else None
        try:
            for k in range(args.repeat):
                direct_url = f"{stack.model_server_url}/v1"
                directs.append(
                    asyncio.run(calls(direct_url, "x", "mock-a", args.calls, args.in_flight))
                )
                for v in variants:
                    take = profile if (k == 0 and v == "shipped") else None
                    s = measure(stack, v, args, take)
                    samples[v].append(s)
                    print(
                        f"run {k + 1}/{args.repeat} {v:<10} {s['wall']:6.2f} s "
                        f"{s['cpu_ms']:5.2f} ms CPU/call  direct {directs[-1]:.2f} s",
                        flush=True,
                    )
        finally:
            stack.stop()
        frames = (
            top_frames(profile, ("litellm/",), 15)
            if profile is not None and profile.exists()
            else []
        )
    direct = statistics.median(directs)
    rows: list[dict[str, Any]] = []
    for v in variants:
        wall = statistics.median(s["wall"] for s in samples[v])
        rows.append(
            {
                "variant": v,
                "calls": args.calls,
                "in_flight": args.in_flight,
                "gateway_wall_s": round(wall, 2),
                "direct_wall_s": round(direct, 2),
                "ratio_gateway_over_direct": round(direct / wall, 3),
                "gateway_cpu_ms_per_call": round(
                    statistics.median(s["cpu_ms"] for s in samples[v]), 2
                ),
                "gateway_rss_mb": round(max(s["rss"] for s in samples[v])),
                "gateway_cpu_ms_per_call_runs": [round(s["cpu_ms"], 2) for s in samples[v]],
                "gateway_wall_s_runs": [round(s["wall"], 2) for s in samples[v]],
                "env": VARIANTS[v] or {"PYTHON_GC_THRESHOLD": GATEWAY_GC_THRESHOLD},
            }
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print("\nvariant     proxy s  direct s  proxy/direct  CPU ms/call  RSS MB")
    for r in rows:
        print(
            f"{r['variant']:<11} {r['gateway_wall_s']:>7} {r['direct_wall_s']:>9} "
            f"{r['ratio_gateway_over_direct']:>13} {r['gateway_cpu_ms_per_call']:>12} "
            f"{r['gateway_rss_mb']:>7}"
        )
    if frames:
        print("\nshipped proxy, heaviest LiteLLM functions (share of py-spy samples):")
        for f, pct in frames:
            print(f"  {pct:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
