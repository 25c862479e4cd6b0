"""Properties of the rendered manifests that matter for safety and operation."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

CI_DIR = Path(__file__).resolve().parents[2] / "charts" / "swarmd" / "ci"
SCENARIOS = sorted(p.name for p in CI_DIR.glob("*-values.yaml"))
ACTIVITY_TIMEOUT_S = 120
SECRETISH = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET|CREDENTIAL)", re.I)


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] == "Deployment":
            tmpl = d["spec"]["template"]
            out.append((d["metadata"]["name"], tmpl["metadata"], tmpl["spec"]))
        elif d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["metadata"], d["spec"]))
    return out


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def _litellm_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-litellm")
    ]
    return yaml.safe_load(cm["data"]["config.yaml"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_value_in_any_configmap(rendered, scenario: str) -> None:
    docs = rendered[scenario]
    configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert configmaps
    generated = [
        base64.b64decode(v).decode()
        for d in docs
        if d["kind"] == "Secret"
        for v in d.get("data", {}).values()
    ]
    for cm in configmaps:
        text = yaml.safe_dump(cm.get("data", {}))
        assert not re.search(r"sk-[A-Za-z0-9_-]{8,}", text)
        for value in generated:
            assert value not in text
    config = _litellm_config(docs)
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    for entry in config["model_list"]:
        for param, value in entry["litellm_params"].items():
            if SECRETISH.search(param) or param.endswith("_key"):
                assert str(value).startswith("os.environ/"), (entry["model_name"], param)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_secret_env_vars_come_from_secrets(rendered, scenario: str) -> None:
    for name, _, spec in _pod_specs(rendered[scenario]):
        for container in _containers(spec):
            for env in container.get("env", []):
                if SECRETISH.search(env["name"]):
                    assert "value" not in env, (name, container["name"], env["name"])
                    assert "secretKeyRef" in env["valueFrom"], (name, env["name"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_sidecar_drains_within_the_grace_period(rendered, scenario: str) -> None:
    (app,) = [
        d
        for d in rendered[scenario]
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "swarmd"
    ]
    annotations = app["spec"]["template"]["metadata"]["annotations"]
    grace = app["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert int(annotations["dapr.io/graceful-shutdown-seconds"]) < grace
    assert annotations["dapr.io/enabled"] == "true"
    assert annotations["dapr.io/app-port"] == "8000"
    assert annotations["dapr.io/log-as-json"] == "true"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_run_non_root_and_read_only(rendered, scenario: str) -> None:
    pods = _pod_specs(rendered[scenario])
    assert len(pods) == 3  # app, LiteLLM, helm test
    for name, _, spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in _containers(spec):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, container["name"])
            image = container["image"]
            assert "@sha256:" in image or re.search(r":[\w.-]+$", image), image
            assert not image.endswith(":latest"), image


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_watchdog_shares_the_app_pod(rendered, scenario: str) -> None:
    (app,) = [
        d
        for d in rendered[scenario]
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "swarmd"
    ]
    spec = app["spec"]["template"]["spec"]
    assert spec["shareProcessNamespace"] is True
    watchdogs = [c for c in _containers(spec) if c["name"] == "watchdog"]
    assert len(watchdogs) == 1
    env = {e["name"]: e for e in watchdogs[0]["env"]}
    assert env["SWARMD_WATCHDOG_APP_CMDLINE"]["value"] == "swarmd serve"
    assert env["DAPR_HTTP_PORT"]["value"] == "3500"
    assert env["DAPR_GRPC_PORT"]["value"] == "50001"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    native = watchdogs[0] in spec.get("initContainers", [])
    assert native == (watchdogs[0].get("restartPolicy") == "Always")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_litellm_routing_fits_the_activity_timeout(rendered, scenario: str) -> None:
    config = _litellm_config(rendered[scenario])
    aliases: dict[str, int] = {}
    for entry in config["model_list"]:
        aliases[entry["model_name"]] = aliases.get(entry["model_name"], 0) + 1
    assert aliases == {"swarmd-fast": 2, "swarmd-smart": 2, "swarmd-backup": 2}
    router = config["router_settings"]
    assert router["routing_strategy"] == "latency-based-routing"
    assert router["num_retries"] == 2
    assert router["allowed_fails"] >= 1 and router["cooldown_time"] > 0
    assert router["fallbacks"] == [
        {"swarmd-fast": ["swarmd-backup"]},
        {"swarmd-smart": ["swarmd-backup"]},
    ]
    assert 0 < router["timeout"] < ACTIVITY_TIMEOUT_S
    resiliency = next(
        d
        for d in rendered[scenario]
        if d["kind"] == "Resiliency" and "timeouts" in d["spec"]["policies"]
    )
    llm_timeout = resiliency["spec"]["policies"]["timeouts"]["llm"]
    assert llm_timeout.endswith("s") and int(llm_timeout[:-1]) < ACTIVITY_TIMEOUT_S


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_litellm_egress_is_443_and_dns_only(rendered, scenario: str) -> None:
    (policy,) = [
        d
        for d in rendered[scenario]
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "swarmd-litellm"
    ]
    ports = {
        (p["port"], p.get("protocol", "TCP"))
        for rule in policy["spec"]["egress"]
        for p in rule["ports"]
    }
    assert ports == {(443, "TCP"), (53, "UDP"), (53, "TCP")}


def test_state_store_backends(rendered) -> None:
    def store(scenario: str) -> dict[str, Any]:
        return next(
            d
            for d in rendered[scenario]
            if d["kind"] == "Component" and d["metadata"]["name"] == "statestore"
        )

    redis = store("default-values.yaml")
    assert redis["spec"]["type"] == "state.redis"
    pg = store("postgresql-values.yaml")
    assert pg["spec"]["type"] == "state.postgresql"
    assert pg["spec"]["version"] == "v2"
    meta = {m["name"]: m for m in pg["spec"]["metadata"]}
    assert meta["actorStateStore"]["value"] == "true"
    assert meta["connectionString"]["secretKeyRef"]["name"] == "swarmd-postgresql"
    assert "value" not in meta["connectionString"]
    lock = next(
        d for d in rendered["postgresql-values.yaml"] if d["metadata"]["name"] == "lockstore"
    )
    assert lock["spec"]["type"] == "lock.redis"


def test_production_scenario_pins_images_by_digest(rendered) -> None:
    for _, _, spec in _pod_specs(rendered["production-values.yaml"]):
        for container in _containers(spec):
            if container["name"] != "curl":
                assert "@sha256:" in container["image"], container["image"]


def test_no_rbac_objects(rendered) -> None:
    for docs in rendered.values():
        assert not [
            d
            for d in docs
            if d["kind"] in {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
        ]
