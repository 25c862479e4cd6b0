"""Swarm specs: the built-ins load, invalid specs are refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmd.engine.spec import SpecRegistry, parse_spec
from swarmd.errors import UnknownSwarm, ValidationFailed


def test_builtin_specs_cover_the_four_patterns() -> None:
    reg = SpecRegistry.for_settings(None)
    assert {s.pattern for s in reg.specs.values()} == {
        "scatter_gather",
        "supervisor",
        "debate",
        "pipeline",
    }


def test_directory_specs_override_builtins(tmp_path: Path) -> None:
    (tmp_path / "mine.json").write_text(
        '{"name": "pipeline", "pattern": "pipeline", "agents": [{"name": "solo", "role": "r"}]}'
    )
    reg = SpecRegistry.for_settings(tmp_path)
    assert [a.name for a in reg.get("pipeline").agents] == ["solo"]
    with pytest.raises(UnknownSwarm) as e:
        reg.get("nope")
    assert e.value.field == "swarm"


@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        (
            {"name": "x", "pattern": "swarmify", "agents": [{"name": "a", "role": "r"}]},
            "spec.pattern",
            "scatter_gather",
        ),
        ({"name": "x", "pattern": "pipeline", "agents": []}, "spec.agents", "at least 1"),
        (
            {
                "name": "x",
                "pattern": "pipeline",
                "agents": [{"name": "a", "role": "r", "max_turns": 0}],
            },
            "spec.agents.0.max_turns",
            "greater than or equal to 1",
        ),
        (
            {
                "name": "x",
                "pattern": "pipeline",
                "agents": [{"name": "a", "role": "r", "tools": ["rm_rf"]}],
            },
            "spec.agents.0.tools.0",
            "calculator",
        ),
        (
            {"name": "x", "pattern": "supervisor", "agents": [{"name": "a", "role": "r"}]},
            "spec",
            "coordinator",
        ),
        (
            {
                "name": "x",
                "pattern": "pipeline",
                "agents": [{"name": "a", "role": "r"}],
                "limits": {"max_paralel": 3},
            },
            "spec.limits.max_paralel",
            "not permitted",
        ),
        (
            {"name": "Bad Name", "pattern": "pipeline", "agents": [{"name": "a", "role": "r"}]},
            "spec.name",
            "pattern",
        ),
    ],
)
def test_invalid_spec_names_the_field(raw: dict, field: str, needle: str) -> None:
    with pytest.raises(ValidationFailed) as e:
        parse_spec(raw)
    assert e.value.field == field
    assert needle in e.value.message
