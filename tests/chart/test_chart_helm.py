"""helm lint --strict and helm template for every CI scenario, and helm-unittest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CI_DIR = Path(__file__).resolve().parents[2] / "charts" / "swarmd" / "ci"
SCENARIOS = sorted(p.name for p in CI_DIR.glob("*-values.yaml"))


def test_the_scenarios_exist() -> None:
    assert SCENARIOS == [
        "default-values.yaml",
        "keda-values.yaml",
        "postgresql-values.yaml",
        "production-values.yaml",
        "pubsub-jetstream-values.yaml",
        "pubsub-kafka-values.yaml",
        "pubsub-redis-values.yaml",
        "slack-values.yaml",
    ]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(chart, scenario: str) -> None:
    proc = chart.helm_lint([scenario])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("kube_version", ["KUBE_VERSION", "KUBE_VERSION_MIN"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_template_renders(chart, scenario: str, kube_version: str) -> None:
    docs = chart.render([scenario], kube_version=getattr(chart, kube_version))
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Component", "Configuration", "Resiliency"} <= kinds


def test_helm_template_refuses_too_old_kubernetes(chart) -> None:
    proc = chart.helm_template(kube_version="1.27.0")
    assert proc.returncode != 0
    assert ">=1.28.0-0" in proc.stderr


@pytest.mark.parametrize(
    ("kube_version", "native"), [("1.28.0", False), ("1.29.0", True), ("1.37.0", True)]
)
def test_watchdog_is_native_sidecar_where_supported(chart, kube_version: str, native: bool) -> None:
    (app,) = [
        d
        for d in chart.render(kube_version=kube_version)
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "swarmd"
    ]
    spec = app["spec"]["template"]["spec"]
    init = [c["name"] for c in spec.get("initContainers", [])]
    main = [c["name"] for c in spec["containers"]]
    assert ("watchdog" in init) == native
    assert ("watchdog" in main) == (not native)


def test_helm_version_is_the_pinned_one(chart) -> None:
    setup = (chart.REPO_ROOT / "scripts" / "setup_chart_tools.sh").read_text()
    pinned = re.search(r'^HELM_VERSION="(v[0-9.]+)"', setup, re.M).group(1)
    proc = chart.run_helm("version", "--template", "{{ .Version }}", check=True)
    assert proc.stdout.strip() == pinned


def test_helm_unittest_suites_pass(chart) -> None:
    proc = chart.subprocess.run(
        [str(chart.helm_unittest_bin()), "--color=false", str(chart.CHART_DIR)],
        capture_output=True,
        text=True,
        timeout=300,
        env=chart.helm_env(),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    suites = re.search(r"Test Suites:\s+(\d+) passed, (\d+) total", out)
    tests = re.search(r"Tests:\s+(\d+) passed, (\d+) total", out)
    assert suites and tests, out
    assert suites.group(1) == suites.group(2)
    assert tests.group(1) == tests.group(2)
    # Every suite file under charts/swarmd/tests ran.
    assert int(suites.group(2)) == len(list((chart.CHART_DIR / "tests").glob("*_test.yaml")))


def test_packaged_chart_leaves_out_tests_and_ci(chart, tmp_path: Path) -> None:
    import tarfile

    chart.run_helm("package", str(chart.CHART_DIR), "-d", str(tmp_path), check=True)
    (tgz,) = tmp_path.glob("swarmd-*.tgz")
    with tarfile.open(tgz) as tar:
        names = tar.getnames()
    assert "swarmd/templates/tests/test-connection.yaml" in names
    assert "swarmd/values.schema.json" in names
    assert not [n for n in names if n.startswith(("swarmd/tests/", "swarmd/ci/"))]


def test_chart_targets_the_sdks_dapr_line(chart) -> None:
    """The chart's Dapr control plane release is on the Python SDK's minor line."""
    pyproject = (chart.REPO_ROOT / "pyproject.toml").read_text()
    sdk = re.search(r'"dapr==(\d+\.\d+)\.\d+"', pyproject)
    assert sdk, "dapr==X.Y.Z pin not found in pyproject.toml"
    assert chart.DAPR_VERSION.rsplit(".", 1)[0] == sdk.group(1)
