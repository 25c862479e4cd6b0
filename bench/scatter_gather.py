"""Scatter-gather throughput: the engine against a plain ``asyncio.gather`` of the same calls.

On the real local stack (placement, scheduler, daprd, app, LiteLLM, model
server; app and daprd as direct processes), for 100 and 1,000 agents:

* ``noop``: the real scatter-gather workflow on engine v3 with no-op LLM
  calls (still journaled): the engine's own ceiling. Baseline:
  ``asyncio.gather`` over the same no-op coroutines. It runs ``--noop-repeat``
  times (5) on one stack, each run its own run id; the row is the median run.
* ``llm-0ms``: a real scatter-gather run through the LiteLLM proxy against the
  local model server answering at once. Baseline: the same planner call,
  ``asyncio.gather`` of the same N agent calls, and the same reduce (every answer
  read: chunk summaries made at once when the answers pass the spec's
  ``reduce_chunk_chars``, then one merge), with the same ``openai`` client settings,
  through the same proxy: the same 1,005 calls for 1,000 agents.
* ``llm-200ms``, ``llm-1000ms``: the same with 200 ms / 1 s model latency.
  With ``--llm-repeat K`` engine and baseline alternate K times (each engine run
  its own run id) and the row holds the medians and every sample: on these
  cores one pair's ratio moves by +-20% from run to run.
* ``noop-e2``: the same on engine v2 (groups of 50 instead of 250), and ``noop-v1``:
  engine v1's shape (a child workflow per agent), for comparison.

Each LLM case also measures the same calls straight to the model server
(``direct_wall_s``), so the gateway's share is visible, and the LiteLLM
proxy's CPU per call during the gateway baseline.

Reported per case: wall time, agent-steps/s, peak RSS of app+daprd, the CPU
seconds each process of the stack spent (where the time goes), and the
engine/baseline ratios measured in the same run. Results go to stdout and to
``bench/results/scatter_gather.json``.

    .venv/bin/python -m bench.scatter_gather [--sizes 100,1000] [--cases noop,llm-0ms,llm-200ms]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI, DefaultAioHttpClient

from bench.profiling import PROJECT_FRAMES, py_spy, top_frames
from swarmd.activities.reduce import CHUNK_PROMPT
from swarmd.config import LLM_MAX_IN_FLIGHT
from swarmd.devstack.launcher import ROOT, Ports, Stack
from swarmd.engine.spec import Limits
from swarmd.workflows.scatter_gather import REDUCER_PROMPT, chunk

RESULTS = Path(__file__).resolve().parent / "results" / "scatter_gather.json"
TASK = "Survey the failure modes of distributed agent systems"


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler:
    """CPU seconds per stack process over a measurement, and peak RSS of app+daprd
    (together, and each one's own peak)."""

    def __init__(self, stack: Stack) -> None:
        self.pids = {n: p.popen.pid for n, p in stack.procs.items()}
        self.start = {n: cpu_seconds(pid) for n, pid in self.pids.items()}
        self.peak = 0.0
        self.peaks: dict[str, float] = {}

    def sample(self) -> None:
        each = {n: rss_mb(self.pids[n]) for n in ("app", "daprd") if n in self.pids}
        self.peak = max(self.peak, sum(each.values()))
        for n, mb in each.items():
            self.peaks[n] = max(self.peaks.get(n, 0.0), mb)

    def cpu(self) -> dict[str, float]:
        return {n: round(cpu_seconds(pid) - self.start[n], 2) for n, pid in self.pids.items()}


def wait_done(api: httpx.Client, run_id: str, sampler: Sampler, timeout_s: float) -> str:
    start = time.monotonic()
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        sampler.sample()
        r = api.get(f"/v1/runs/{run_id}")
        if r.status_code == 200 and r.json()["status"] in ("completed", "failed", "terminated"):
            return str(r.json()["status"])
        # an end is seen within 50 ms in a short run (a 2 s run measured at 0.2 s
        # steps was 5% off), within 0.2 s after 10 s; a poll costs the app ~1 ms
        time.sleep(0.05 if time.monotonic() - start < 10 else 0.2)
    raise TimeoutError(run_id)


def measured(api: httpx.Client, run_id: str, sampler: Sampler, t0: float) -> dict[str, Any]:
    """Wait for the run, then its wall time (from ``t0``), status, peak RSS and CPU split."""
    status = wait_done(api, run_id, sampler, timeout_s=1800)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "status": status,
        "peak_rss_mb": round(sampler.peak),
        "peak_rss_mb_by_process": {n: round(mb) for n, mb in sampler.peaks.items()},
        "cpu_s": sampler.cpu(),
    }


def engine_noop(
    stack: Stack, api: httpx.Client, n: int, tag: str, workflow: str = "bench.noop_swarm"
) -> dict[str, Any]:
    run_id = f"bench-noop-{n}-{tag}"
    sampler = Sampler(stack)
    t0 = time.perf_counter()
    r = httpx.post(
        f"{stack.dapr_url}/v1.0/workflows/dapr/{workflow}/start?instanceID={run_id}",
        json={"agents": n},
    )
    r.raise_for_status()
    return measured(api, run_id, sampler, t0)


PROFILE_PORT_INDEX = 24  # the last port of the stack's 25-port block


def profile_daprd(stack: Stack, seconds: int) -> subprocess.Popen[bytes] | None:
    """A CPU profile of daprd over ``seconds`` through its pprof endpoint, if Go is here."""
    go = shutil.which("go")
    if go is None or "--enable-profiling" not in stack.daprd_args:
        return None
    port = stack.daprd_args[stack.daprd_args.index("--profile-port") + 1]
    return subprocess.Popen(
        [
            go,
            "tool",
            "pprof",
            "-top",
            "-nodecount=18",
            f"-seconds={seconds}",
            f"http://127.0.0.1:{port}/debug/pprof/profile",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def engine_llm(stack: Stack, api: httpx.Client, n: int, tag: str) -> dict[str, Any]:
    sampler = Sampler(stack)
    user = f"bench-{tag}-{n}"
    calls = len(stack.model_calls(status=None))
    t0 = time.perf_counter()
    r = api.post(
        "/v1/runs",
        json={
            "swarm": "scatter_gather",
            "run_id": user,
            "input": {"task": TASK, "agents": n, "max_parallel": n, "user": user},
        },
    )
    r.raise_for_status()
    out = measured(api, r.json()["run_id"], sampler, t0)
    answered = [c for c in stack.model_calls(status=None)[calls:] if c.get("user") == user]
    out["model_calls"] = sum(1 for c in answered if c.get("status") == 200)
    out["output_check"] = check_output(api, user, n)
    return out


def check_output(api: httpx.Client, run_id: str, n: int) -> str:
    """ "exact" when the run's output is what the deterministic model server makes it:
    every agent answered, in order, each its own part of the plan, and a reducer
    answer; otherwise what is wrong."""
    view = api.get(f"/v1/runs/{run_id}", timeout=300).json()
    output = view.get("output") or {}
    results = output.get("agent_results") or []
    if view.get("status") != "completed":
        return f"status {view.get('status')}"
    if len(results) != n:
        return f"{len(results)} agent results, not {n}"
    for i, res in enumerate(results):
        if res.get("status") != "answered" or f"Part {i + 1} of {n}:" not in (
            res.get("content") or ""
        ):
            return f"agent {i}: {res.get('status')} {str(res.get('content'))[:80]!r}"
    if output.get("failed_agents") or not output.get("answer"):
        return "failed agents or no answer"
    return "exact"


async def baseline_noop(n: int) -> float:
    async def step(i: int) -> dict[str, Any]:
        return {"agent": i, "content": "ok"}

    t0 = time.perf_counter()
    await step(-1)
    await asyncio.gather(*(step(i) for i in range(n)))
    await step(-2)
    return time.perf_counter() - t0


#: calls the baselines keep in flight: the engine's own bound (SWARMD_LLM_MAX_IN_FLIGHT,
#: as the app under test gets it from this environment). Unbounded, 10,000 calls queued
#: in one HTTP client's pool spent the baseline's CPU on the pool's bookkeeping (it
#: never finished), which no competent asyncio program does.
BASELINE_IN_FLIGHT = int(os.environ.get("SWARMD_LLM_MAX_IN_FLIGHT", LLM_MAX_IN_FLIGHT))


async def baseline_llm(stack: Stack, n: int, direct: bool = False) -> float:
    """planner, ``n`` agent calls, reducer: through the gateway, or with ``direct``
    straight to the model server (the gateway's share is the difference). The same
    client stack as the engine's (openai on aiohttp) with the same in-flight bound."""
    if direct:
        base_url, key = f"{stack.model_server_url}/v1", "direct"
        models = {"swarmd-smart": "mock-a", "swarmd-fast": "mock-a"}
    else:
        base_url, key = f"http://127.0.0.1:{stack.ports.litellm}/v1", stack.gateway_key
        models = {}
    # the direct path has no proxy in front to queue 1,000 connections: a reset socket is
    # retried by the client there (a few, counted in the time) instead of failing the bench
    client = AsyncOpenAI(
        base_url=base_url,
        api_key=key,
        max_retries=3 if direct else 0,
        timeout=120,
        http_client=DefaultAioHttpClient(),
    )
    gate = asyncio.Semaphore(BASELINE_IN_FLIGHT)

    async def call(model: str, system: str, user: str) -> str:
        async with gate:
            resp = await client.chat.completions.create(
                model=models.get(model, model),
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
            )
        return resp.choices[0].message.content or ""

    t0 = time.perf_counter()
    plan = await call(
        "swarmd-smart", f"Split the task into exactly {n} subtasks.", f"{TASK} (baseline)"
    )
    subtasks = plan.splitlines()[:n]
    answers = await asyncio.gather(
        *(call("swarmd-fast", "You are a careful analyst.", s) for s in subtasks)
    )
    # the reduce the engine does: every answer read, in chunk summaries made at once when
    # together they pass the reduce limit, then one merge (the same 1,005 calls for 1,000)
    sections = [f"## agent-{i + 1}\n{a}" for i, a in enumerate(answers)]
    merged = "\n\n".join(sections)
    if len(merged) > REDUCE_CHUNK_CHARS:
        chunks = chunk(sections, REDUCE_CHUNK_CHARS)
        parts = await asyncio.gather(
            *(
                call(
                    "swarmd-smart",
                    CHUNK_PROMPT.format(i=i + 1, n=len(chunks)),
                    f"Task: {TASK}\n\nAnswers:\n{c}",
                )
                for i, c in enumerate(chunks)
            )
        )
        merged = "\n\n".join(f"## part {i + 1}\n{p}" for i, p in enumerate(parts))
    await call(
        "swarmd-smart",
        REDUCER_PROMPT.format(n=len(answers)),
        f"Task: {TASK}\n\nAnswers:\n{merged}",
    )
    took = time.perf_counter() - t0
    await client.close()
    return took


#: where the engine's scatter-gather reduces in chunks (the spec's default limit)
REDUCE_CHUNK_CHARS = Limits().reduce_chunk_chars


def latency_ms(case: str) -> int:
    """``llm-200ms`` -> 200."""
    return int(case.removeprefix("llm-").removesuffix("ms"))


def set_latency(stack: Stack, ms: int) -> None:
    faults = [{"model": "*", "latency_ms": ms}] if ms else []
    httpx.put(f"{stack.model_server_url}/_control/faults", json=faults).raise_for_status()


#: no-op case -> the bench plugin's workflow it runs
NOOP_WORKFLOWS = {
    "noop": "bench.noop_swarm",  # engine v3
    "noop-e2": "bench.noop_swarm_e2",  # engine v2: its groups of 50
    "noop-v1": "bench.noop_fanout",  # engine v1: a child workflow per agent
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--cases", default="noop,llm-0ms,llm-200ms")
    ap.add_argument(
        "--noop-repeat",
        type=int,
        default=5,
        help="no-op runs per size (each its own run id): the row reports the median, "
        "and every run's wall time (the first one on a fresh stack is the slowest)",
    )
    ap.add_argument(
        "--llm-repeat",
        type=int,
        default=1,
        help="LLM runs per case and size, engine and baseline alternating (each engine "
        "run its own run id): the row reports the medians and every sample",
    )
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        help="also profile the app (py-spy) and daprd (pprof) during an N-agent no-op run",
    )
    ap.add_argument(
        "--data-dir-parent",
        default=None,
        help="where the stack's data dir goes (e.g. /dev/shm to take fsync out)",
    )
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = args.cases.split(",")
    slot = int(os.environ.get("SWARMD_BENCH_PORT_OFFSET", "4400"))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-", dir=args.data_dir_parent) as tmp:
        ports = Ports.for_tests(slot)
        daprd_args = []
        if args.profile:
            profile_port = ports.placement + PROFILE_PORT_INDEX
            daprd_args = ["--enable-profiling", "--profile-port", str(profile_port)]
        stack = Stack(
            daprd_args=daprd_args,
            data_dir=Path(tmp),
            ports=Ports.for_tests(slot),
            app_mode="direct",
            app_env={
                "SWARMD_PLUGINS": '["bench.plugin"]',
                "PYTHONPATH": str(ROOT),
                "SWARMD_MAX_AGENTS": "10000",
                "SWARMD_LOG_LEVEL": "WARNING",
                "SWARMD_MAX_BODY_BYTES": "10000000",
            },
        )
        print(f"starting the stack in {tmp} ...", flush=True)
        stack.start()
        headers = {"Authorization": f"Bearer {stack.api_token}"}
        try:
            with httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as api:
                engine_llm(stack, api, 5, "warmup")  # first calls pay imports and routing
                if args.profile:
                    prof = Path(tmp) / "app.collapsed"
                    spy = py_spy(stack.procs["app"].popen.pid, prof, rate=50)
                    go_prof = profile_daprd(stack, seconds=20)
                    took = engine_noop(stack, api, args.profile, "profile")
                    print(f"profiled run: {args.profile} no-op agents in {took['wall_s']:.1f}s")
                    if go_prof is not None:
                        out, _ = go_prof.communicate(timeout=120)
                        print("daprd CPU profile (go tool pprof -top, first 20 s):")
                        print("\n".join(out.decode(errors="replace").splitlines()[:22]))
                    if spy is not None:
                        spy.send_signal(2)
                        spy.wait(timeout=60)
                        print("app profile (share of samples, by innermost project frame):")
                        for frame, pct in top_frames(prof, PROJECT_FRAMES):
                            print(f"  {pct:5.1f}%  {frame}")
                for case in cases:
                    for n in sizes:
                        extra: dict[str, Any] = {}
                        if case in NOOP_WORKFLOWS:
                            wf = NOOP_WORKFLOWS[case]
                            runs = [
                                engine_noop(stack, api, n, f"{case}-{k}", wf)
                                for k in range(max(1, args.noop_repeat))
                            ]
                            eng = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
                            extra = {"engine_wall_s_runs": [round(r["wall_s"], 2) for r in runs]}
                            base = statistics.median(
                                asyncio.run(baseline_noop(n)) for _ in range(len(runs))
                            )
                        else:
                            set_latency(stack, latency_ms(case))
                            # engine and baseline alternate, each run its own run id: the
                            # row holds the medians, and every sample
                            engines, bases, gws = [], [], []
                            base_calls = 0
                            for k in range(max(1, args.llm_repeat)):
                                tag = case if k == 0 else f"{case}-{k}"
                                engines.append(engine_llm(stack, api, n, tag))
                                sampler = Sampler(stack)
                                before = len(stack.model_calls())
                                bases.append(asyncio.run(baseline_llm(stack, n)))
                                gws.append(sampler.cpu().get("litellm", 0.0))
                                base_calls = len(stack.model_calls()) - before
                            eng = sorted(engines, key=lambda r: r["wall_s"])[len(engines) // 2]
                            base = statistics.median(bases)
                            gw = statistics.median(gws)
                            direct = asyncio.run(baseline_llm(stack, n, direct=True))
                            set_latency(stack, 0)
                            extra = {
                                "direct_wall_s": round(direct, 3),
                                "ratio_gateway_over_direct": round(direct / base, 2),
                                "baseline_model_calls": base_calls,
                                "gateway_cpu_ms_per_call": round(1000 * gw / base_calls, 1),
                                "ratio_engine_over_direct": round(eng["wall_s"] / direct, 2),
                            }
                            if len(engines) > 1:
                                extra["engine_wall_s_runs"] = [
                                    round(r["wall_s"], 2) for r in engines
                                ]
                                extra["baseline_wall_s_runs"] = [round(b, 2) for b in bases]
                                extra["ratio_runs"] = [
                                    round(r["wall_s"] / b, 2)
                                    for r, b in zip(engines, bases, strict=True)
                                ]
                        checks: dict[str, Any] = {
                            k: eng[k] for k in ("model_calls", "output_check") if k in eng
                        }
                        row = {
                            "case": case,
                            "agents": n,
                            "engine_wall_s": round(eng["wall_s"], 2),
                            "baseline_wall_s": round(base, 4),
                            "engine_steps_per_s": round(n / eng["wall_s"], 1),
                            "baseline_steps_per_s": round(n / base, 1),
                            "ratio_engine_over_baseline": round(eng["wall_s"] / base, 2),
                            "status": eng["status"],
                            "peak_rss_mb_app_daprd": eng["peak_rss_mb"],
                            "peak_rss_mb_by_process": eng["peak_rss_mb_by_process"],
                            **checks,
                            "cpu_s": eng["cpu_s"],
                            **extra,
                        }
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            stack.stop()
    RESULTS.parent.mkdir(exist_ok=True)
    results = (
        RESULTS if args.data_dir_parent is None else RESULTS.with_name("scatter_gather-tmpfs.json")
    )
    results.write_text(json.dumps(rows, indent=2) + "\n")
    print("\ncase        agents  engine s  baseline s  ratio  steps/s  peak MB")
    for r in rows:
        print(
            f"{r['case']:<11} {r['agents']:>6} {r['engine_wall_s']:>9} "
            f"{r['baseline_wall_s']:>11} {r['ratio_engine_over_baseline']:>6} "
            f"{r['engine_steps_per_s']:>8} {r['peak_rss_mb_app_daprd']:>8}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
