"""The run viewer on a 1,000-agent run: what its timeline costs and what the page holds.

On the real local stack (app and daprd as direct processes, the LiteLLM proxy,
the model server), one scatter-gather run of ``--agents`` agents, then:

* the timeline (``GET /v1/runs/{id}/agents``, every agent with its retries read
  from the agents' own histories) the first time (cold) and again (warm: finished
  agents' retry counts are cached), against the baseline measured in the same run,
  ``GET /v1/runs/{id}`` (the run's status with every agent's output), with the CPU
  seconds app and daprd spent per request;
* the run page in headless Chromium (Debian's): time until the timeline shows every
  agent, row elements and DOM elements on the page, the page's timers, and the time to
  scroll the whole timeline through (one frame per step).

    .venv/bin/python -m bench.viewer [--agents 1000] [--repeat 5]

Port offset: ``SWARMD_BENCH_PORT_OFFSET`` (default 4600). Results: bench/results/viewer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.scatter_gather import cpu_seconds
from swarmd.devstack.launcher import Ports, Stack

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "viewer.json"


def timed(api: httpx.Client, path: str, pids: dict[str, int], repeat: int) -> dict[str, Any]:
    """Median wall time, bytes, and CPU seconds per request of app and daprd."""
    walls: list[float] = []
    size = 0
    before = {n: cpu_seconds(p) for n, p in pids.items()}
    for _ in range(repeat):
        t = time.perf_counter()
        r = api.get(path)
        walls.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
        size = len(r.content)
    cpu = {n: round((cpu_seconds(p) - before[n]) / repeat, 3) for n, p in pids.items()}
    return {"median_s": round(statistics.median(walls), 3), "bytes": size, "cpu_s": cpu}


def browse(stack: Stack, run_id: str, agents: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if not chromium:
        raise SystemExit("no chromium: run `make chromium`")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        page = b.new_page(viewport={"width": 1400, "height": 1000}, base_url=stack.api_url)
        page.goto("/ui/")
        page.fill("#token-input", stack.api_token)
        page.click("#token-save")
        t = time.perf_counter()
        page.goto(f"/ui/#/runs/{run_id}")
        page.locator("#timeline-summary").filter(has_text=f"{agents} agents").wait_for(
            timeout=120_000
        )
        shown = time.perf_counter() - t
        stats = page.evaluate(
            """async () => {
              const list = document.querySelector('#timeline .vlist');
              const steps = Math.ceil(list.scrollHeight / list.clientHeight);
              const frame = () => new Promise(r => requestAnimationFrame(() => r()));
              const t0 = performance.now();
              for (let i = 0; i <= steps; i++) {
                list.scrollTop = i * list.clientHeight;
                await frame();
              }
              const scroll = performance.now() - t0;
              const ticker = await import('/ui/ticker.js');
              return {
                rows: document.querySelectorAll('#timeline .vrow').length,
                dom_elements: document.getElementsByTagName('*').length,
                timers: ticker.timerCount(),
                scroll_steps: steps + 1,
                scroll_ms_per_step: +(scroll / (steps + 1)).toFixed(2),
                js_heap_mb: performance.memory
                  ? +(performance.memory.usedJSHeapSize / 1048576).toFixed(1) : null,
              };
            }"""
        )
        b.close()
    return {"page_ready_s": round(shown, 2), **stats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    slot = int(os.environ.get("SWARMD_BENCH_PORT_OFFSET", "4600"))
    with tempfile.TemporaryDirectory(prefix="swarmd-bench-viewer-") as tmp:
        stack = Stack(
            data_dir=Path(tmp),
            ports=Ports.for_tests(slot),
            app_mode="direct",
            app_env={"SWARMD_LOG_LEVEL": "WARNING", "SWARMD_MAX_AGENTS": "10000"},
        )
        print(f"starting the stack in {tmp} ...", flush=True)
        stack.start()
        headers = {"Authorization": f"Bearer {stack.api_token}"}
        try:
            with httpx.Client(base_url=stack.api_url, headers=headers, timeout=300) as api:
                body = {
                    "swarm": "scatter_gather",
                    "input": {"task": "Survey agent failure modes", "agents": args.agents},
                }
                run_id = api.post("/v1/runs", json=body).json()["run_id"]
                t = time.monotonic()
                while api.get(f"/v1/runs/{run_id}/answer").json()["status"] != "completed":
                    if time.monotonic() - t > 1800:
                        raise SystemExit("the run did not complete in 30 min")
                    time.sleep(1)
                print(f"{args.agents}-agent run done in {time.monotonic() - t:.0f} s", flush=True)
                pids = {n: stack.procs[n].popen.pid for n in ("app", "daprd")}
                cold = timed(api, f"/v1/runs/{run_id}/agents", pids, 1)
                warm = timed(api, f"/v1/runs/{run_id}/agents", pids, args.repeat)
                base = timed(api, f"/v1/runs/{run_id}", pids, args.repeat)
                page = browse(stack, run_id, args.agents)
        finally:
            stack.stop()
    result = {
        "agents": args.agents,
        "timeline_cold": cold,
        "timeline_warm": warm,
        "baseline_get_run": base,
        "warm_over_baseline": round(warm["median_s"] / base["median_s"], 2),
        "cold_over_baseline": round(cold["median_s"] / base["median_s"], 2),
        "page": page,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
