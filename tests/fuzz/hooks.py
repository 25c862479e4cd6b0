"""Schemathesis hooks (SCHEMATHESIS_HOOKS): the one request rule JSON Schema cannot
state. An inline spec's agent names must be unique (the schema's description says
so); a generated spec with duplicates is not sent as "valid" data."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """Every phase's cases (``filter_body`` would leave the coverage phase's alone)."""
    body = getattr(case, "body", None)
    if case.meta is not None and not case.meta.generation.mode.is_positive:
        return True  # invalid data: it is refused anyway
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        return True
    agents = body["spec"].get("agents")
    if not isinstance(agents, list):
        return True
    names = [a.get("name") for a in agents if isinstance(a, dict)]
    return len(names) == len(set(names))
