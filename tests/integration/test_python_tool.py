"""The ``python`` tool end to end: API -> workflow -> gateway -> model server's tool
directive -> the WebAssembly sandbox -> the tool result back through the gateway
-> the agent's answer. Every limit ends as an answer quoting the error; no run fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_run

pytestmark = pytest.mark.integration

SPEC = {
    "name": "coder",
    "pattern": "pipeline",
    "agents": [{"name": "coder", "role": "You run Python.", "tools": ["python"]}],
}


def start(api: httpx.Client, code: str, user: str) -> str:
    task = f"use tool python with {json.dumps({'code': code})}"
    r = api.post("/v1/runs", json={"spec": SPEC, "input": {"task": task, "user": user}})
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


def tool_result(agent: dict[str, Any]) -> dict[str, Any]:
    """The tool result the answer quotes (the model server answers 'tool said <json>')."""
    assert agent["status"] == "answered" and agent["turns"] == 2, agent
    quoted = agent["content"].split("tool said ", 1)[1]
    result: dict[str, Any] = json.loads(quoted)
    return result


def run_code(api: httpx.Client, code: str, user: str) -> dict[str, Any]:
    view = wait_run(api, start(api, code, user))
    assert view["status"] == "completed", view
    (agent,) = view["output"]["agent_results"]
    return tool_result(agent)


def test_print_gives_the_answer(api: httpx.Client, calls_since: Any) -> None:
    calls = calls_since(user="t-py-42")
    out = run_code(api, "print(6*7)", "t-py-42")
    assert out["stdout"] == "42\n" and out["exit_code"] == 0 and "error" not in out
    assert len([c for c in calls() if c["status"] == 200]) == 2  # tool call, then the answer


def test_host_files_are_invisible(api: httpx.Client, tmp_path: Path) -> None:
    out = run_code(api, "print(open('/etc/hostname').read())", "t-py-fs")
    assert out["exit_code"] == 1 and "FileNotFoundError" in out["stderr"]
    secret = tmp_path / "host-secret.txt"  # a host file the app process can read
    secret.write_text("host-only-7f3a9c")
    out = run_code(api, f"print(open({str(secret)!r}).read())", "t-py-fs")
    assert out["exit_code"] == 1 and "FileNotFoundError" in out["stderr"]
    assert "host-only-7f3a9c" not in json.dumps(out)


def test_endless_loop_stops_at_the_cpu_limit(api: httpx.Client) -> None:
    out = run_code(api, "while True: pass", "t-py-cpu")
    assert out["error"] in ("cpu_limit", "timeout") and out["exit_code"] is None


def test_four_gib_allocation_stops_at_the_memory_limit(api: httpx.Client) -> None:
    # wasm32 indexes at most 4 GiB, so ask for it in four 1 GiB blocks
    out = run_code(api, "x = [bytearray(1 << 30) for _ in range(4)]", "t-py-mem")
    assert out["error"] == "memory_limit" and "MemoryError" in out["stderr"]


def test_sockets_fail(api: httpx.Client) -> None:
    code = "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 80))"
    out = run_code(api, code, "t-py-net")
    assert out["exit_code"] == 1 and "OSError" in out["stderr"]


def test_fifty_concurrent_calls_finish_within_the_limits(api: httpx.Client) -> None:
    """50 runs each making one python call at once: all answer, none fails, and the
    API keeps answering while they run (the sandbox never runs on the event loop)."""
    ids = [start(api, f"print({i} * {i})", f"t-py-many-{i}") for i in range(50)]
    assert api.get("/healthz").status_code == 200
    for i, run_id in enumerate(ids):
        view = wait_run(api, run_id)
        assert view["status"] == "completed", view
        out = tool_result(view["output"]["agent_results"][0])
        assert out["stdout"] == f"{i * i}\n" and "error" not in out
