"""The local stack as a user meets it: `swarmd demo` / `swarmd up` through the Dapr CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from swarmd.devstack.launcher import Ports, find_binary
from tests.conftest import ROOT, TEST_OFFSET, wait_until

pytestmark = pytest.mark.integration
OFFSET = TEST_OFFSET + 1000  # beside the session stack


def _env(offset: int) -> dict[str, str]:
    return {**os.environ, "SWARMD_PORT_BASE": str(Ports.for_tests(offset).placement)}


def test_demo_prints_the_result_and_exits_zero(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "swarmd", "demo", "--agents", "3", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=_env(OFFSET),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "=== result ===" in proc.stdout
    assert "3 agent results" in proc.stdout
    # logs land under the data dir, including the CLI-run app's and daprd's
    assert (tmp_path / "logs" / "placement.log").exists()
    assert list((tmp_path / "app" / ".dapr" / "logs").glob("*daprd*.log"))


def test_up_shows_in_dapr_list_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    ports = Ports.for_tests(OFFSET + 100)
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmd", "up", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=_env(OFFSET + 100),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def ready() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                return httpx.get(f"http://127.0.0.1:{ports.app}/readyz", timeout=2).is_success
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout_s=300, what="the app behind `swarmd up`")
        listing = subprocess.run(
            [str(find_binary("dapr")), "list"], capture_output=True, text=True, timeout=60
        )
        assert "swarmd" in listing.stdout, listing.stdout + listing.stderr
        assert str(ports.dapr_http) in listing.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopping" in out
    for port in (ports.app, ports.dapr_http, ports.litellm, ports.placement):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    ports = Ports.for_tests(OFFSET + 200)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.litellm))
        s.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "swarmd", "demo", "--data-dir", str(tmp_path)],
            cwd=ROOT,
            env=_env(OFFSET + 200),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 3
    assert f"litellm={ports.litellm}" in proc.stderr and "in use" in proc.stderr
