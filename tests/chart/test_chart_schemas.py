"""Every rendered object is validated strictly against a real schema:
Kubernetes' (kubernetes-validate), the Dapr CRDs' openAPIV3Schema (from the
Dapr Go module), or KEDA's (npm @kubernetes-models/keda)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

CI_DIR = Path(__file__).resolve().parents[2] / "charts" / "swarmd" / "ci"
SCENARIOS = sorted(p.name for p in CI_DIR.glob("*-values.yaml"))


def _k8s_validate(obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        raise AssertionError(
            f"{obj['kind']}/{obj['metadata']['name']}: {path}: {e.message}"
        ) from None


@pytest.mark.parametrize("kube_version", ["KUBE_VERSION", "KUBE_VERSION_MIN"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_validates_strictly(chart, scenario: str, kube_version: str) -> None:
    version = getattr(chart, kube_version)
    docs = chart.render([scenario], kube_version=version)
    dapr = chart.dapr_crd_schemas()
    keda: list[dict[str, Any]] = []
    for obj in docs:
        key = (obj["apiVersion"], obj["kind"])
        if key in dapr:
            try:
                jsonschema.Draft7Validator(dapr[key]).validate(obj)
                chart.validate_object_meta(obj["metadata"], version)
            except jsonschema.ValidationError as e:
                raise AssertionError(
                    f"{obj['kind']}/{obj['metadata']['name']}: {list(e.path)}: {e.message}"
                ) from None
        elif obj["apiVersion"].startswith("keda.sh/"):
            keda.append(obj)
        else:
            # Raises SchemaNotFoundError for a kind nobody validates.
            _k8s_validate(obj, version)
    if keda:
        assert chart.keda_validate(keda) == []
        for obj in keda:
            chart.validate_object_meta(obj["metadata"], version)
            _validate_hpa_behavior(chart, obj, version)


def _validate_hpa_behavior(chart, scaled_object: dict[str, Any], version: str) -> None:
    """KEDA passes advanced.horizontalPodAutoscalerConfig.behavior to the HPA verbatim."""
    behavior = (
        scaled_object["spec"]
        .get("advanced", {})
        .get("horizontalPodAutoscalerConfig", {})
        .get("behavior")
    )
    if behavior is None:
        return
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "behavior-check"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
            "maxReplicas": 2,
            "behavior": behavior,
        },
    }
    _k8s_validate(hpa, version)


def test_keda_scenario_has_a_scaled_object(rendered) -> None:
    kinds = [d["kind"] for d in rendered["keda-values.yaml"]]
    assert "ScaledObject" in kinds
    assert "HorizontalPodAutoscaler" not in kinds


def test_dapr_crds_come_from_the_pinned_module(chart) -> None:
    crd_dir = chart.dapr_crd_dir()
    assert f"dapr@v{chart.DAPR_VERSION}" in str(crd_dir)
    assert not str(crd_dir).startswith(str(chart.REPO_ROOT))
    kinds = {k for (_, k) in chart.dapr_crd_schemas()}
    assert {"Component", "Configuration", "Resiliency", "HTTPEndpoint"} <= kinds


# --- the validators do reject bad objects (so a pass above means something) ---


def _first(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(d for d in docs if d["kind"] == kind))


def test_kubernetes_validation_rejects_an_unknown_field(chart, rendered) -> None:
    deployment = _first(rendered["default-values.yaml"], "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(deployment, chart.KUBE_VERSION, strict=True)


def test_dapr_validation_rejects_an_unknown_field(chart, rendered) -> None:
    component = _first(rendered["default-values.yaml"], "Component")
    component["spec"]["metdata"] = []
    schema = chart.dapr_crd_schemas()[("dapr.io/v1alpha1", "Component")]
    with pytest.raises(jsonschema.ValidationError, match="metdata"):
        jsonschema.Draft7Validator(schema).validate(component)


def test_dapr_validation_rejects_a_wrong_type(chart, rendered) -> None:
    resiliency = _first(rendered["default-values.yaml"], "Resiliency")
    resiliency["spec"]["policies"]["retries"]["llm"]["maxRetries"] = "two"
    schema = chart.dapr_crd_schemas()[("dapr.io/v1alpha1", "Resiliency")]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(resiliency)


def test_keda_validation_rejects_bad_objects(chart, rendered) -> None:
    scaled = _first(rendered["keda-values.yaml"], "ScaledObject")
    unknown = copy.deepcopy(scaled)
    unknown["spec"]["triggers"][0]["metdata"] = {}
    wrong_type = copy.deepcopy(scaled)
    wrong_type["spec"]["maxReplicaCount"] = "ten"
    missing = copy.deepcopy(scaled)
    del missing["spec"]["scaleTargetRef"]
    problems = chart.keda_validate([unknown, wrong_type, missing])
    text = "\n".join(problems)
    assert 'unknown field "metdata"' in text
    assert "maxReplicaCount" in text
    assert "scaleTargetRef" in text


def test_kubernetes_validate_cli_strict(chart, tmp_path: Path) -> None:
    """The same check through the tool's own CLI, as a person would run it."""
    import shutil
    import subprocess
    import sys

    proc = chart.helm_template(["production-values.yaml"])
    assert proc.returncode == 0, proc.stderr
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(proc.stdout)
    cli = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    assert cli, "kubernetes-validate is not installed (pip install -r tests/chart/requirements.txt)"
    out = subprocess.run(
        [cli, "--strict", "--kubernetes-version", chart.KUBE_VERSION, "--no-warn", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ERROR" not in out.stdout
    assert out.stdout.count("passed for resource") >= 10
