"""The package layout: one path per module, and the engine imports no outer layer."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"swarmd.workflows": "workflows", "swarmd.activities": "activities"}
MAPPED["swarmd.watchdog"] = "watchdog"
#: layers above the engine (swarmd.engine must not import them)
OUTER = ("swarmd.api", "swarmd.agents", "swarmd.workflows", "swarmd.activities")
OUTER += ("swarmd.devstack", "swarmd.compose", "swarmd.watchdog", "swarmd.identity")
OUTER += ("swarmd.slack",)


@pytest.mark.parametrize("package", sorted(MAPPED))
def test_mapped_packages_have_one_path(package: str) -> None:
    """swarmd.workflows & co. are the top-level folders themselves, from any directory."""
    code = f"import {package} as p; print(p.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True
    )
    assert Path(out.stdout.strip()) == ROOT / MAPPED[package] / "__init__.py"
    assert not any(p.is_symlink() for p in (ROOT / "swarmd").rglob("*"))


def test_top_level_folders_shadow_no_installed_distribution() -> None:
    """The folders are importable as `watchdog` etc. when the repo root is on sys.path:
    no installed distribution may provide a module of the same name."""
    provided = importlib.metadata.packages_distributions()
    clashes = {name: provided[name] for name in MAPPED.values() if name in provided}
    assert clashes == {}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def test_engine_imports_no_outer_layer() -> None:
    bad = {
        f"{p.relative_to(ROOT)}: {m}"
        for p in (ROOT / "swarmd" / "engine").glob("*.py")
        for m in _imports(p)
        if m.startswith(OUTER)
    }
    assert bad == set()


def test_composition_root_registers_every_workflow_name() -> None:
    from swarmd.compose.worker import WORKFLOWS
    from swarmd.engine import names

    assert set(names.PATTERNS.values()) <= WORKFLOWS.keys()
    assert {names.AGENT_LOOP, names.USER_AGENT} <= WORKFLOWS.keys()
