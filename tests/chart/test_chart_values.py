"""values.yaml, values.schema.json and the chart's fail() checks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "swarmd"


# --- invalid values fail with a message saying what to fix -------------------


def _write_values(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # top-level key that does not exist (replicaCount lives under app)
        ("replicaCount: 3\n", "at '': additional properties 'replicaCount' not allowed"),
        # misspelt key in its right place
        ("app:\n  replicaCont: 3\n", "at '/app': additional properties 'replicaCont' not allowed"),
        (
            "dapr:\n  stateStore:\n    tpye: postgresql\n",
            "additional properties 'tpye' not allowed",
        ),
        # a broker the chart cannot render
        ("pubsub:\n  type: rabbitmq\n", "at '/pubsub/type': value must be one of"),
        # a RuntimeClass name must be a DNS subdomain, per workload
        ("app:\n  runtimeClassName: G Visor\n", "at '/app/runtimeClassName': 'G Visor'"),
        ("litellm:\n  runtimeClassName: Kata_QEMU\n", "at '/litellm/runtimeClassName'"),
    ],
)
def test_misspelt_key_fails_lint_and_template(
    chart, tmp_path: Path, values: str, expected: str
) -> None:
    path = _write_values(tmp_path, values)
    lint = chart.helm_lint([path])
    assert lint.returncode != 0
    assert expected in lint.stdout + lint.stderr
    template = chart.helm_template([path])
    assert template.returncode != 0
    assert expected in template.stderr


GRACE_MESSAGE = (
    "dapr.gracefulShutdownSeconds (60) must be below app.terminationGracePeriodSeconds (60): "
    "otherwise Kubernetes kills the Dapr sidecar before it has drained in-flight workflow work. "
    "Lower dapr.gracefulShutdownSeconds or raise app.terminationGracePeriodSeconds."
)


@pytest.mark.parametrize("grace", [60, 75])
def test_graceful_shutdown_not_below_grace_period_fails(chart, grace: int) -> None:
    sets = [f"dapr.gracefulShutdownSeconds={grace}", "app.terminationGracePeriodSeconds=60"]
    message = GRACE_MESSAGE.replace("(60) must", f"({grace}) must")
    template = chart.helm_template(sets=sets)
    assert template.returncode != 0
    assert message in template.stderr
    lint = chart.helm_lint(sets=sets)
    assert lint.returncode != 0
    assert message in lint.stdout


def test_graceful_shutdown_just_below_grace_period_passes(chart) -> None:
    chart.render(sets=["dapr.gracefulShutdownSeconds=59", "app.terminationGracePeriodSeconds=60"])


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["autoscaling.keda.enabled=true", "autoscaling.hpa.enabled=true"],
            "autoscaling.keda.enabled and autoscaling.hpa.enabled are both true",
        ),
        (
            ["pubsub.enabled=true", "dapr.appTokenSecret=t", "pubsub.type=kafka"],
            "pubsub.type is kafka but pubsub.kafka.brokers is empty",
        ),
        (
            ["dapr.stateStore.type=postgresql"],
            "dapr.stateStore.type is postgresql but "
            "dapr.stateStore.postgresql.connectionSecret.name "
            "is empty: create a Secret with the PostgreSQL connection string",
        ),
        (
            ["litellm.routerSettings.timeout=150"],
            "litellm.routerSettings.timeout (150 s) must be below "
            "the app's activity timeout (120 s)",
        ),
        (
            ["litellm.enabled=false"],
            "litellm.enabled is false but litellm.externalUrl is empty",
        ),
    ],
)
def test_invalid_combinations_fail_lint_and_template(chart, sets: list[str], message: str) -> None:
    template = chart.helm_template(sets=sets)
    assert template.returncode != 0
    assert message in template.stderr
    lint = chart.helm_lint(sets=sets)
    assert lint.returncode != 0
    assert message in lint.stdout


def test_several_errors_are_reported_together(chart) -> None:
    proc = chart.helm_template(
        sets=[
            "autoscaling.keda.enabled=true",
            "autoscaling.hpa.enabled=true",
            "dapr.stateStore.type=postgresql",
        ]
    )
    assert "autoscaling.keda.enabled and autoscaling.hpa.enabled" in proc.stderr
    assert "dapr.stateStore.type is postgresql" in proc.stderr


def test_literal_api_key_is_rejected(chart, tmp_path: Path) -> None:
    path = _write_values(
        tmp_path,
        "litellm:\n  modelList:\n    - model_name: swarmd-fast\n      litellm_params:\n"
        "        model: openai/gpt-4.1-mini\n        api_key: sk-live-abcdef0123456789\n",
    )
    proc = chart.helm_template([path])
    assert proc.returncode != 0
    assert "api_key" in proc.stderr
    assert "os\\\\.environ" in proc.stderr or "os\\.environ" in proc.stderr


# --- values.yaml documentation ------------------------------------------------


def _documented_keys(text: str) -> tuple[list[str], list[str]]:
    """(every key path in values.yaml, those without a `# --` comment).

    A key counts as documented when the comment block right above it starts
    with `# --`; that also documents everything below it (helm-docs shows a
    documented map as one value). A mapping whose children are all
    documented needs no comment of its own; keys inside list items (model list
    entries) belong to the list's value and are documented with it.
    """
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []
    keys: list[str] = []
    undocumented: list[str] = []
    in_list_item_indent: int | None = None
    parents_with_children: set[str] = set()
    documented: set[str] = set()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if in_list_item_indent is not None and indent > in_list_item_indent:
            continue
        in_list_item_indent = None
        if stripped.startswith("- "):
            in_list_item_indent = indent - 1 if indent else -1
            continue
        m = re.match(r"^([A-Za-z0-9_.\-/\"]+):(\s|$)", stripped)
        if not m:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [m.group(1)])
        if stack:
            parents_with_children.add(".".join(p for _, p in stack))
        keys.append(path)
        # Walk up the comment block above this key.
        j = i - 1
        block: list[str] = []
        while j >= 0 and lines[j].strip().startswith("#"):
            block.insert(0, lines[j].strip())
            j -= 1
        if block and block[0].startswith("# --"):
            documented.add(path)
        stack.append((indent, m.group(1)))
        # A key whose value is a list: its items are part of the value.
        if stripped.endswith(":") and i + 1 < len(lines) and lines[i + 1].strip().startswith("- "):
            in_list_item_indent = indent
    for path in keys:
        parts = path.split(".")
        if any(".".join(parts[:n]) in documented for n in range(1, len(parts) + 1)):
            continue
        if path in parents_with_children:
            continue  # a mapping: documented through its children
        undocumented.append(path)
    return keys, undocumented


def test_every_value_has_a_helm_docs_comment() -> None:
    keys, undocumented = _documented_keys((CHART_DIR / "values.yaml").read_text())
    assert len(keys) > 100
    assert undocumented == []


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        paths.add(path)
        if sub.get("additionalProperties") is False:
            paths |= _schema_paths(sub, path + ".")
    return paths


def _value_paths(values: Any, prefix: str = "", schema: dict[str, Any] | None = None) -> set[str]:
    paths: set[str] = set()
    if not isinstance(values, dict):
        return paths
    for name, sub in values.items():
        path = f"{prefix}{name}"
        paths.add(path)
        sub_schema = (schema or {}).get("properties", {}).get(name, {})
        if isinstance(sub, dict) and sub_schema.get("additionalProperties") is False:
            paths |= _value_paths(sub, path + ".", sub_schema)
    return paths


def test_schema_and_values_describe_the_same_keys() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    in_schema = _schema_paths(schema) - {"global"}
    in_values = _value_paths(values, schema=schema)
    # Optional knobs the schema accepts without a default: resource limits
    # and further LiteLLM settings.
    optional = re.compile(r"\.resources\.|\.litellmSettings\.|\.routerSettings\.")
    missing = {p for p in in_schema - in_values if not optional.search(p)}
    assert missing == set(), "schema keys without a default in values.yaml"
    assert in_values - in_schema == set(), "values.yaml keys the schema does not know"


def test_schema_rejects_unknown_keys_everywhere() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    loose: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                loose.append(path or "<root>")
            for key, sub in node.items():
                walk(sub, f"{path}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}/{i}")

    walk(schema, "")
    assert loose == []
    assert schema["additionalProperties"] is False
