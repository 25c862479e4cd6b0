"""The ``swarmd runs``/``swarmd agents`` CLI against the real stack, as a user runs it:
the installed entry point in a subprocess, finding the stack from its data dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from swarmd.devstack.launcher import Stack

pytestmark = pytest.mark.integration


def swarmd(stack: Stack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMD_")}
    env["SWARMD_DATA_DIR"] = str(stack.data_dir)  # the stack's stack.json and token
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "swarmd", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_start_follow_shows_progress_and_exits_0_when_completed(stack: Stack) -> None:
    p = swarmd(
        stack,
        "runs",
        "start",
        "scatter_gather",
        "--task",
        "Plan a product launch",
        "--agents",
        "20",
        "--user",
        "t-cli",
        "--follow",
    )
    assert p.returncode == 0, p.stderr
    assert "20/20 agents" in p.stderr  # the progress bar's last state
    assert "tokens" in p.stderr and "completed" in p.stdout
    assert "answer" in p.stdout

    p = swarmd(stack, "runs", "list", "--user", "t-cli", "--json")
    assert p.returncode == 0, p.stderr
    items: list[dict[str, Any]] = json.loads(p.stdout)["items"]
    assert items[0]["status"] == "completed"
    assert items[0]["progress"]["agents_done"] == 20
    run_id = items[0]["run_id"]

    p = swarmd(stack, "runs", "list", "--user", "t-cli")
    assert p.returncode == 0 and run_id in p.stdout and "20/20" in p.stdout, p.stdout

    p = swarmd(stack, "runs", "get", run_id, "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "completed"
    p = swarmd(stack, "runs", "pause", run_id)
    assert p.returncode == 4 and "completed" in p.stderr, p.stderr  # 409: it has finished
    p = swarmd(stack, "runs", "purge", run_id)
    assert p.returncode == 0, p.stderr
    p = swarmd(stack, "runs", "get", run_id)
    assert p.returncode == 4 and "no run" in p.stderr


def test_a_run_that_does_not_complete_exits_1(stack: Stack, model_server: httpx.Client) -> None:
    r = model_server.put("/_control/faults", json=[{"model": "*", "latency_ms": 2000}])
    assert r.status_code == 200, r.text  # slow enough to terminate it mid-run
    p = swarmd(
        stack,
        "runs",
        "start",
        "supervisor",
        "--task",
        "Wait for me",
        "--user",
        "t-cli-term",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    run_id = json.loads(p.stdout)["run_id"]
    p = swarmd(stack, "runs", "terminate", run_id, "--reason", "testing")
    assert p.returncode == 0, p.stderr
    p = swarmd(stack, "runs", "watch", run_id)
    assert p.returncode == 1, p.stderr
    assert "terminated" in p.stdout


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["runs", "start", "scatter_gather", "--task", "x", "--agents", "0"], "--agents"),
        (["runs", "start", "no_such_swarm", "--task", "x"], "<swarm>"),
        (["runs", "start", "pipeline", "--task", ""], "--task"),
        (["runs", "list", "--since", "yesterday"], "--since"),
    ],
)
def test_bad_input_exits_2_naming_the_flag(stack: Stack, args: list[str], names: str) -> None:
    p = swarmd(stack, *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert names in p.stderr


def test_a_wrong_token_exits_4_and_is_never_printed(stack: Stack) -> None:
    p = swarmd(stack, "runs", "list", "--token", "wrong-token-123")
    assert p.returncode == 4
    assert "invalid bearer token" in p.stderr and "wrong-token-123" not in p.stderr


def test_agents_provision_message_list_deprovision(stack: Stack) -> None:
    user = f"t-cli-{os.getpid()}"
    p = swarmd(stack, "agents", "provision", user, "--template", "analyst", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["user_id"] == user, p.stderr
    p = swarmd(stack, "agents", "message", user, "hello there")
    assert p.returncode == 0 and p.stdout.strip(), p.stderr
    p = swarmd(stack, "agents", "list", "--limit", "200", "--json")
    mine = [a for a in json.loads(p.stdout)["items"] if a["user_id"] == user]
    assert mine and mine[0]["messages"] == 1
    p = swarmd(stack, "agents", "deprovision", user, "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["clean"] is True


def test_no_log_of_the_stack_holds_a_token(stack: Stack) -> None:
    """After the CLI (token from the stack's files) and every earlier test's requests
    (bearer headers), no process's log holds the API token or daprd's app token."""
    secrets = {"api token": stack.api_token, "app token": stack.app_api_token}
    logs = [p for p in stack.logs.rglob("*") if p.is_file()]
    assert logs, f"no logs under {stack.logs}"
    leaked = [
        (p.name, what)
        for p in logs
        for what, secret in secrets.items()
        if secret and secret in p.read_text(errors="replace")
    ]
    assert leaked == []
