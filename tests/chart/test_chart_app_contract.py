"""The environment the chart gives the containers is what the app reads.

Builds the app's and the watchdog's settings objects from the env of the
rendered containers (Secret references replaced by placeholders), so a
renamed setting on either side fails here rather than in a cluster.
"""

from __future__ import annotations

import os
from typing import Any

import pytest


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = f"secret-{item['valueFrom']['secretKeyRef']['key']}"
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = "from-downward-api"
    return env


def _app_pod(chart, scenario: str) -> dict[str, Any]:
    (app,) = [
        d
        for d in chart.render([scenario])
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "swarmd"
    ]
    return app["spec"]["template"]["spec"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("SWARMD_", "DAPR_", "POD_", "OTEL_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("scenario", ["default-values.yaml", "production-values.yaml"])
def test_app_settings_from_chart_env(chart, clean_env: pytest.MonkeyPatch, scenario: str) -> None:
    from swarmd.config import Settings

    spec = _app_pod(chart, scenario)
    (app,) = [c for c in spec["containers"] if c["name"] == "swarmd"]
    for name, value in _container_env(app).items():
        clean_env.setenv(name, value)
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.port == app["ports"][0]["containerPort"] == 8000
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "secret-api-token"
    assert settings.llm_api_key.get_secret_value() == "secret-litellm-master-key"
    assert settings.llm_base_url.endswith("/v1")
    assert settings.state_store == "statestore"
    assert settings.lock_store == "lockstore"
    assert settings.pod_name == "from-downward-api"


def test_watchdog_settings_from_chart_env(chart, clean_env: pytest.MonkeyPatch) -> None:
    from swarmd.watchdog.settings import WatchdogSettings

    spec = _app_pod(chart, "default-values.yaml")
    (watchdog,) = [c for c in spec["initContainers"] if c["name"] == "watchdog"]
    for name, value in _container_env(watchdog).items():
        clean_env.setenv(name, value)
    settings = WatchdogSettings()
    assert settings.app_cmdline == "swarmd serve"
    assert settings.port == watchdog["ports"][0]["containerPort"] == 8081
    assert settings.host == "0.0.0.0"
    assert settings.dapr_http_port == 3500
    assert settings.state_store == "statestore"
    assert settings.pod_name == settings.pod_namespace == "from-downward-api"
    # The app's command line really contains the substring the watchdog looks for.
    (app,) = [c for c in spec["containers"] if c["name"] == "swarmd"]
    assert settings.app_cmdline in " ".join(app["command"] + app.get("args", []))
