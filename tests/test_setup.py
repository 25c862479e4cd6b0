"""Runtime provisioning: pins agree, and a missing Go is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT


def read_versions() -> dict[str, str]:
    out = {}
    for line in (ROOT / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


def test_python_sdk_pins_match_the_runtime_line() -> None:
    runtime = read_versions()["DAPR_RUNTIME_VERSION"]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {d.split("==")[0]: d.split("==")[1] for d in deps if d.startswith("dapr")}
    assert set(pins) == {"dapr", "dapr-ext-workflow", "dapr-ext-fastapi"}
    for name, version in pins.items():
        assert version.split(".")[:2] == runtime.split(".")[:2], (name, version, runtime)


def test_missing_go_is_a_clear_error(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DAPR_RUNTIME_PATH": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "setup_dapr.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if any(Path(p, "go").exists() for p in env["PATH"].split(os.pathsep)):
        import pytest

        pytest.skip("a go binary lives in /usr/bin on this machine")
    assert proc.returncode == 3
    assert "Go is not installed" in proc.stderr and "make setup" in proc.stderr


def test_installed_runtime_reports_the_pinned_version() -> None:
    from swarmd.devstack.launcher import find_binary

    want = read_versions()["DAPR_RUNTIME_VERSION"]
    out = subprocess.run(
        [str(find_binary("daprd")), "--version"], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == want, out.stdout + out.stderr
    # placement and scheduler have no --version: their Go build info names the module
    for name in ("placement", "scheduler"):
        info = subprocess.run(
            ["go", "version", "-m", str(find_binary(name))],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert f"github.com/dapr/dapr\tv{want}" in info.stdout, (name, info.stdout[-500:])
