"""Property-based tests of the OpenAPI document against a real local stack.

``make fuzz`` (``python -m tests.fuzz.harness``) starts a stack of its own, runs
``schemathesis run <url>/openapi.json --checks all`` with the examples, coverage and
fuzzing phases, and exits with schemathesis' code (0: no failures). The stack caps
runs at ``SWARMD_MAX_AGENTS=4`` (the schema says so too), so generated start requests
stay cheap; the model server stands in for the LLM provider.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from swarmd.devstack.launcher import Ports, Stack

HERE = Path(__file__).resolve().parent
#: settings of the fuzzed stack: small runs, quick event streams
APP_ENV = {"SWARMD_MAX_AGENTS": "4", "SWARMD_SSE_KEEPALIVE_S": "0.5"}


def fuzz_stack(data_dir: Path, slot: int) -> Stack:
    return Stack(data_dir=data_dir, ports=Ports.for_tests(slot), app_mode="direct", app_env=APP_ENV)


def run_schemathesis(
    stack: Stack,
    max_examples: int,
    seed: int,
    report_dir: Path,
    exclude: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """One schemathesis run against ``stack`` (``exclude``: operations by name, e.g.
    ``"POST /v1/locks/{resource}"``); its output is in the result."""
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{stack.api_url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--request-timeout",
        "70",
        # long polls wait up to 60 s by design (wait_s of locks and messages)
        "--max-response-time",
        "75",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir.resolve()),
    ]
    for name in exclude:
        cmd += ["--exclude-name", name]
    env = {
        **os.environ,
        "SWARMD_FUZZ_TOKEN": stack.api_token,
        "SCHEMATHESIS_HOOKS": str(HERE / "hooks.py"),
        "NO_COLOR": "1",
    }
    report_dir.mkdir(parents=True, exist_ok=True)  # its cache (.schemathesis/) goes there too
    return subprocess.run(
        cmd, env=env, cwd=report_dir, capture_output=True, text=True, timeout=3600
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-examples", type=int, default=100, help="cases per operation and phase")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--report-dir", default=".data/fuzz", help="where the JUnit report goes")
    args = p.parse_args(argv)
    slot = int(os.environ.get("SWARMD_TEST_PORT_OFFSET", "1000")) + 500
    with tempfile.TemporaryDirectory(prefix="swarmd-fuzz-") as tmp:
        stack = fuzz_stack(Path(tmp), slot)
        stack.start()
        try:
            res = run_schemathesis(stack, args.max_examples, args.seed, Path(args.report_dir))
        finally:
            stack.stop()
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
