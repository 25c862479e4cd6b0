"""The LiteLLM config the chart renders is accepted by the LiteLLM proxy.

Starts the proxy (the `gateway` extra pinned in pyproject.toml) on a loopback
port with the ConfigMap's config.yaml and dummy provider keys, then checks the
endpoints the chart's probes use and that the three aliases are served. No
model is called, so nothing leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:  # loopback only
        return resp.status, resp.read()


def test_rendered_config_boots_litellm(chart, tmp_path: Path) -> None:
    litellm = shutil.which("litellm", path=str(Path(sys.executable).parent))
    if litellm is None:
        pytest.skip("LiteLLM proxy not installed in this venv (pip install -e '.[gateway]')")
    docs = chart.render(["production-values.yaml"])
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    for key, text in cm["data"].items():  # config.yaml and the guardrail module beside it
        (tmp_path / key).write_text(text)
    config = tmp_path / "config.yaml"
    (deployment,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-litellm")
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    probes = (
        container["livenessProbe"]["httpGet"]["path"],
        container["readinessProbe"]["httpGet"]["path"],
    )

    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_PROXY")) and k != "LITELLM_MASTER_KEY"
    }
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # as the chart sets it: no network at start-up
        LITELLM_MASTER_KEY="sk-chart-test",
        HOME=str(tmp_path),
        NO_PROXY="127.0.0.1",
    )
    for name in yaml.safe_load((chart.CHART_DIR / "ci" / "production-values.yaml").read_text())[
        "litellm"
    ]["providerKeys"]:
        env[name] = "dummy"
    log = (tmp_path / "litellm.log").open("w")
    proc = subprocess.Popen(
        [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 180  # ~6 s on an idle machine; much longer under load
        while True:
            assert proc.poll() is None, (tmp_path / "litellm.log").read_text()[-3000:]
            try:
                status, _ = _get(f"http://127.0.0.1:{port}{probes[1]}")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "LiteLLM did not become ready"
            time.sleep(1)
        assert _get(f"http://127.0.0.1:{port}{probes[0]}")[0] == 200
        status, body = _get(f"http://127.0.0.1:{port}/v1/models", token="sk-chart-test")
        assert status == 200
        served = {m["id"] for m in yaml.safe_load(body)["data"]}
        assert served == {"swarmd-fast", "swarmd-smart", "swarmd-backup"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
