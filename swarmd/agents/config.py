"""Role templates, the operator baseline, and a user's customisation of both.

Layers, each only able to *narrow* the one above it::

    baseline (operator)  ->  template (role)  ->  preferences + skills (user)

* The **baseline** (``swarmd/templates/baseline.yaml`` or ``SWARMD_AGENT_BASELINE``)
  names tools that are always denied, whether data access is read-only, and the
  maximum daily token budget and turns.
* A **template** (``swarmd/templates/<role>.yaml``) gives the system prompt, model
  alias, allowed tools and limits of a role. Tools the baseline denies are
  dropped from it, and its limits are capped by the baseline's.
* A user's **preferences** (fewer tools, a lower budget, fewer turns, a note for
  the prompt) and **skills** (named prompts with a tool preset) may only pick
  from what the template allows. Asking for more raises :class:`BaselineViolation`
  (403) naming the field; nothing is silently clamped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarmd.engine.jsontypes import integral
from swarmd.errors import BaselineViolation, ValidationFailed

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
USER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Baseline(_Model):
    denied_tools: list[str] = Field(default_factory=list)
    #: no built-in tool writes shared data (``http_get`` reads, memory tools write the
    #: user's own keys); the flag only refuses a customisation that asks to lift it
    read_only_data: bool = True
    max_daily_tokens: int = Field(200_000, ge=1)
    max_turns: int = Field(8, ge=1, le=50)
    memory_turns: int = Field(20, ge=0, le=200)

    def denied(self) -> frozenset[str]:
        return frozenset(self.denied_tools)


class Template(_Model):
    name: str = Field(pattern=NAME_RE)
    system_prompt: str = Field(min_length=1, max_length=20_000)
    model: str = Field(min_length=1, max_length=100)
    tools: list[str] = Field(default_factory=list)
    max_turns: int = Field(4, ge=1, le=50)
    max_daily_tokens: int = Field(100_000, ge=1)


class Skill(_Model):
    prompt: str = Field(min_length=1, max_length=10_000)
    tools: list[str] | None = Field(None, description="tool preset; None = all allowed tools")


class Preferences(_Model):
    tools: list[str] | None = Field(None, description="narrow the template's tools")
    max_daily_tokens: Annotated[int, Ge(1), integral] | None = None
    max_turns: Annotated[int, Ge(1), Le(50), integral] | None = None
    note: str | None = Field(None, max_length=2_000, description="added to the system prompt")
    read_only_data: bool | None = None


class Profile(_Model):
    """What is stored per user: the template it was provisioned with and its customisation."""

    user_id: str
    template: str
    preferences: Preferences = Field(default_factory=Preferences)
    skills: dict[str, Skill] = Field(default_factory=dict)
    created_at: str


class Effective(_Model):
    """The resolved configuration a turn runs with."""

    system_prompt: str
    model: str
    tools: list[str]
    max_turns: int
    max_daily_tokens: int
    memory_turns: int


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from exc


def load_baseline(path: Path | None = None) -> Baseline:
    p = path or TEMPLATES_DIR / "baseline.yaml"
    try:
        return Baseline.model_validate(_load_yaml(p) or {})
    except ValidationError as exc:
        raise ValueError(f"{p}: invalid agent baseline: {exc}") from exc


def load_templates(extra_dir: Path | None = None) -> dict[str, Template]:
    out: dict[str, Template] = {}
    for d in (TEMPLATES_DIR, extra_dir):
        if d is None:
            continue
        for p in sorted(d.glob("*.yaml")):
            if p.stem == "baseline":
                continue
            try:
                t = Template.model_validate(_load_yaml(p))
            except ValidationError as exc:
                raise ValueError(f"{p}: invalid template: {exc}") from exc
            out[t.name] = t
    return out


def template_tools(baseline: Baseline, template: Template) -> list[str]:
    """The template's tools minus what the baseline denies."""
    denied = baseline.denied()
    return [t for t in template.tools if t not in denied]


def check_customisation(
    baseline: Baseline, template: Template, prefs: Preferences, skills: dict[str, Skill]
) -> None:
    """Refuse anything that would widen the baseline or the template."""
    allowed = set(template_tools(baseline, template))
    denied = baseline.denied()

    def check_tools(tools: list[str] | None, field: str) -> None:
        for t in tools or []:
            if t in denied:
                raise BaselineViolation(
                    f"{field}: tool {t!r} is denied by the operator baseline", field=field
                )
            if t not in allowed:
                raise BaselineViolation(
                    f"{field}: tool {t!r} is not allowed by the {template.name!r} template "
                    f"(allowed: {sorted(allowed)})",
                    field=field,
                )

    check_tools(prefs.tools, "preferences.tools")
    cap = min(baseline.max_daily_tokens, template.max_daily_tokens)
    if prefs.max_daily_tokens is not None and prefs.max_daily_tokens > cap:
        raise BaselineViolation(
            f"preferences.max_daily_tokens: {prefs.max_daily_tokens} is above the limit of {cap}",
            field="preferences.max_daily_tokens",
        )
    turns = min(baseline.max_turns, template.max_turns)
    if prefs.max_turns is not None and prefs.max_turns > turns:
        raise BaselineViolation(
            f"preferences.max_turns: {prefs.max_turns} is above the limit of {turns}",
            field="preferences.max_turns",
        )
    if baseline.read_only_data and prefs.read_only_data is False:
        raise BaselineViolation(
            "preferences.read_only_data: the operator baseline makes data access read-only",
            field="preferences.read_only_data",
        )
    narrowed = set(prefs.tools) if prefs.tools is not None else allowed
    for name, skill in skills.items():
        if not re.match(NAME_RE, name):
            raise ValidationFailed(
                f"skills.{name}: skill names are 1-64 letters, digits, _ -", field=f"skills.{name}"
            )
        check_tools(skill.tools, f"skills.{name}.tools")
        for t in skill.tools or []:
            if t not in narrowed:
                raise BaselineViolation(
                    f"skills.{name}.tools: tool {t!r} is outside the user's preferences.tools",
                    field=f"skills.{name}.tools",
                )


def effective(
    baseline: Baseline, template: Template, profile: Profile, skill: str | None = None
) -> Effective:
    """What a turn runs with (the customisation was checked when it was stored)."""
    prefs = profile.preferences
    tools = template_tools(baseline, template)
    if prefs.tools is not None:
        tools = [t for t in tools if t in prefs.tools]
    prompt = template.system_prompt
    if prefs.note:
        prompt += f"\n\nThe user's preferences: {prefs.note}"
    if skill is not None:
        s = profile.skills.get(skill)
        if s is None:
            raise ValidationFailed(f"skill: no skill named {skill!r}", field="skill")
        prompt += f"\n\nSkill {skill}: {s.prompt}"
        if s.tools is not None:
            tools = [t for t in tools if t in s.tools]
    return Effective(
        system_prompt=prompt,
        model=template.model,
        tools=tools,
        max_turns=min(baseline.max_turns, template.max_turns, prefs.max_turns or 50),
        max_daily_tokens=min(
            baseline.max_daily_tokens,
            template.max_daily_tokens,
            prefs.max_daily_tokens or baseline.max_daily_tokens,
        ),
        memory_turns=baseline.memory_turns,
    )


def check_user_id(user_id: str, field: str = "user_id") -> str:
    if not USER_ID_RE.match(user_id):
        raise ValidationFailed(
            f"{field}: 1-64 letters, digits, _ or -, starting with a letter or digit", field=field
        )
    return user_id
