"""Shared helpers for the chart tests (tests/chart).

The tools come from scripts/setup_chart_tools.sh, which installs them under
${XDG_CACHE_HOME:-~/.cache}/swarmd/tools (override with SWARMD_CHART_TOOLS).
A missing tool fails the tests with the command to run; nothing is skipped,
so a CI run without the tools cannot pass silently.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "swarmd"
CI_DIR = CHART_DIR / "ci"
SCENARIOS = sorted(p.name for p in CI_DIR.glob("*-values.yaml"))

# The Kubernetes release the chart is rendered and validated for ("current"),
# and the oldest one it supports (Chart.yaml kubeVersion; on it the watchdog
# is a plain container, native sidecars being off by default before 1.29).
KUBE_VERSION = "1.37.0"
KUBE_VERSION_MIN = "1.28.0"

SETUP_HINT = "run `bash scripts/setup_chart_tools.sh` first"


def _chart_dapr_version() -> str:
    """The Dapr control plane release the chart targets (Chart.yaml annotation)."""
    chart_yaml = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    return str(chart_yaml["annotations"]["swarmd.dev/dapr-version"])


DAPR_VERSION = _chart_dapr_version()


def tools_dir() -> Path:
    override = os.environ.get("SWARMD_CHART_TOOLS")
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "swarmd" / "tools"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(f"{what} not found at {path}: {SETUP_HINT}", pytrace=False)
    return path


@functools.cache
def helm_bin() -> Path:
    return _require(tools_dir() / "bin" / "helm", "helm")


@functools.cache
def helm_unittest_bin() -> Path:
    return _require(tools_dir() / "bin" / "helm-unittest", "helm-unittest")


@functools.cache
def dapr_crd_dir() -> Path:
    gomodcache = subprocess.run(
        ["go", "env", "GOMODCACHE"], check=True, capture_output=True, text=True
    ).stdout.strip()
    crds = (
        Path(gomodcache)
        / "github.com"
        / "dapr"
        / f"dapr@v{DAPR_VERSION}"
        / "charts"
        / "dapr"
        / "crds"
    )
    return _require(crds, f"Dapr {DAPR_VERSION} CRDs")


@functools.cache
def keda_models_dir() -> Path:
    return _require(
        tools_dir() / "npm" / "node_modules" / "@kubernetes-models" / "keda",
        "@kubernetes-models/keda",
    )


# --- helm ---------------------------------------------------------------------


def helm_env() -> dict[str, str]:
    """An environment that keeps helm away from the user's config and any cluster."""
    base = tools_dir() / "helm-home"
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(base / "cache"),
        HELM_CONFIG_HOME=str(base / "config"),
        HELM_DATA_HOME=str(base / "data"),
        KUBECONFIG=os.devnull,
    )
    return env


def run_helm(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(helm_bin()), *args],
        capture_output=True,
        text=True,
        env=helm_env(),
        cwd=REPO_ROOT,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _value_args(values_files: Iterable[str | Path] = (), sets: Iterable[str] = ()) -> list[str]:
    args: list[str] = []
    for f in values_files:
        path = Path(f)
        if not path.is_absolute():
            path = CI_DIR / path
        args += ["-f", str(path)]
    for s in sets:
        args += ["--set", s]
    return args


def helm_template(
    values_files: Iterable[str | Path] = (),
    sets: Iterable[str] = (),
    kube_version: str = KUBE_VERSION,
    extra: Iterable[str] = (),
) -> subprocess.CompletedProcess[str]:
    return run_helm(
        "template",
        "swarmd",
        str(CHART_DIR),
        "--namespace",
        "swarmd",
        "--kube-version",
        kube_version,
        *_value_args(values_files, sets),
        *extra,
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate mapping keys.

    Kubernetes' decoder rejects (or, depending on the client, silently
    merges) duplicated keys; PyYAML would keep the last one and hide the bug.
    """


def _construct_unique_mapping(
    loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False
) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_manifests(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=_UniqueKeyLoader) if d]


def render(
    values_files: Iterable[str | Path] = (),
    sets: Iterable[str] = (),
    kube_version: str = KUBE_VERSION,
) -> list[dict[str, Any]]:
    proc = helm_template(values_files, sets, kube_version)
    if proc.returncode != 0:
        raise AssertionError(f"helm template failed:\n{proc.stderr}")
    return load_manifests(proc.stdout)


def helm_lint(
    values_files: Iterable[str | Path] = (),
    sets: Iterable[str] = (),
    kube_version: str = KUBE_VERSION,
) -> subprocess.CompletedProcess[str]:
    return run_helm(
        "lint",
        "--strict",
        str(CHART_DIR),
        "--namespace",
        "swarmd",
        "--kube-version",
        kube_version,
        *_value_args(values_files, sets),
    )


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- schemas ------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """Forbid unknown fields wherever a CRD schema lists its properties.

    The API server prunes unknown fields of structural CRDs (and rejects them
    with kubectl's --validate=strict); a schema with explicit properties and
    no additionalProperties / x-kubernetes-preserve-unknown-fields gets
    additionalProperties: false here, which is what strict validation means.
    """
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def dapr_crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict openAPIV3Schema, from the Dapr module's CRDs."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(dapr_crd_dir().glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = _strict(copy.deepcopy(schema))
    return schemas


def kubernetes_schema_dir(kube_version: str) -> Path:
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return base / f"v{kube_version}-local-strict"


def validate_object_meta(meta: dict[str, Any], kube_version: str = KUBE_VERSION) -> None:
    """Validate metadata of a custom resource against Kubernetes' ObjectMeta (strict)."""
    import jsonschema
    from referencing import Registry, Resource

    schema_dir = kubernetes_schema_dir(kube_version)
    schema = json.loads((schema_dir / "objectmeta-meta-v1.json").read_text())
    defs = json.loads((schema_dir / "_definitions.json").read_text())
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    jsonschema.Draft202012Validator(schema, registry=registry).validate(meta)


def keda_validate(objects: list[dict[str, Any]]) -> list[str]:
    """Validate ScaledObjects and TriggerAuthentications with the compiled schemas of
    @kubernetes-models/keda (node)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required to validate KEDA objects", pytrace=False)
    script = Path(__file__).with_name("keda_validate.mjs")
    proc = subprocess.run(
        [node, str(script), str(keda_models_dir())],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode not in (0, 1):
        raise AssertionError(f"keda_validate.mjs crashed:\n{proc.stderr}")
    return [line for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def chart() -> Any:
    """These helpers, as a fixture (test modules cannot import conftest)."""
    import sys

    return sys.modules[__name__]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every CI scenario rendered once per session: scenario file name -> objects."""
    return {scenario: render([scenario]) for scenario in SCENARIOS}
