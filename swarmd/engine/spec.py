"""Swarm specs: a typed, versioned description of a swarm.

A spec names the pattern, its agents (name, role prompt, model alias, allowed
tools, max turns) and its limits (parallelism, rounds, token budget,
deadline). Specs load from a directory of YAML/JSON files (``specs/``,
``SWARMD_SPECS_DIR``) by name, or arrive inline in a start request.

Example (``specs/supervisor.yaml``)::

    version: 1
    name: supervisor
    pattern: supervisor
    coordinator: {name: lead, role: "You coordinate the team."}
    agents:
      - {name: researcher, role: "You research facts.", tools: [http_get]}
      - {name: writer, role: "You write clearly."}
    limits: {max_rounds: 6, token_budget: 200000}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from swarmd.engine.jsontypes import JsonInt, One, integral
from swarmd.errors import UnknownSwarm, validation_failed

Pattern = Literal["scatter_gather", "supervisor", "debate", "pipeline"]
ToolName = Literal["calculator", "http_get", "memory_read", "memory_write", "python"]
NAME = r"^[a-z][a-z0-9_\-]{0,39}$"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "specs"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AgentSpec(_Spec):
    name: str = Field(pattern=NAME)
    role: str = Field(min_length=1, max_length=8000, description="the agent's role prompt")
    model: str = Field("swarmd-fast", min_length=1, description="a gateway model alias")
    tools: list[ToolName] = Field(default_factory=list)
    max_turns: JsonInt = Field(4, ge=1, le=50)


class Limits(_Spec):
    max_parallel: JsonInt = Field(50, ge=1, le=10_000, description="agents in flight at once")
    max_rounds: JsonInt = Field(3, ge=1, le=100, description="supervisor / debate rounds")
    token_budget: Annotated[int, Ge(1), integral] | None = Field(
        None, description="stop cleanly past this many"
    )
    deadline_s: Annotated[int, Ge(1), integral] | None = Field(
        None, description="stop cleanly after this long"
    )
    reduce_chunk_chars: JsonInt = Field(
        50_000, ge=100, description="scatter_gather: reduce in chunks above this many characters"
    )


class SwarmSpec(_Spec):
    version: One = 1
    name: str = Field(pattern=NAME)
    pattern: Pattern
    description: str = ""
    agents: list[AgentSpec] = Field(min_length=1, max_length=1000)
    #: planner (scatter_gather), supervisor (supervisor), judge (debate)
    coordinator: AgentSpec | None = None
    #: reducer (scatter_gather)
    reducer: AgentSpec | None = None
    decision: Literal["judge", "vote"] = "judge"
    approval: bool = Field(False, description="wait for an 'approval' event before finishing")
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _pattern_rules(self) -> SwarmSpec:
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ValueError("agents: names must be unique")
        if self.pattern == "supervisor" and self.coordinator is None:
            raise ValueError("coordinator: a supervisor swarm needs a coordinator agent")
        if self.pattern == "debate":
            if len(self.agents) < 2:
                raise ValueError("agents: a debate needs at least 2 agents")
            if self.decision == "judge" and self.coordinator is None:
                raise ValueError("coordinator: decision 'judge' needs a coordinator (the judge)")
        return self


def parse_spec(raw: Any, *, where: str = "spec") -> SwarmSpec:
    """Validate a spec; errors name the field (``spec.agents.0.max_turns``)."""
    try:
        return SwarmSpec.model_validate(raw)
    except ValidationError as exc:
        raise validation_failed(exc.errors(), prefix=(where,)) from exc


class SpecRegistry:
    """Specs from a directory, by name; loaded once (at start-up)."""

    def __init__(self, specs: dict[str, SwarmSpec]) -> None:
        self.specs = specs

    @classmethod
    def load(cls, directory: Path) -> SpecRegistry:
        specs: dict[str, SwarmSpec] = {}
        for path in sorted(directory.glob("*")):
            if path.suffix not in (".yaml", ".yml", ".json"):
                continue
            text = path.read_text()
            raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            spec = parse_spec(raw, where=path.name)
            if spec.name in specs:
                raise ValueError(f"{path}: duplicate spec name {spec.name!r}")
            specs[spec.name] = spec
        return cls(specs)

    @classmethod
    def for_settings(cls, extra_dir: Path | None) -> SpecRegistry:
        """The built-in specs (``swarmd/specs``), overridden by ``extra_dir``'s."""
        specs = dict(cls.load(BUILTIN_DIR).specs)
        if extra_dir is not None:
            specs.update(cls.load(extra_dir).specs)
        return cls(specs)

    def get(self, name: str) -> SwarmSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise UnknownSwarm(
                f"unknown swarm {name!r}; known: {', '.join(sorted(self.specs))} "
                "(or send an inline 'spec')",
                field="swarm",
            ) from None
