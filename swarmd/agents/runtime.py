"""Registration of the user-agent activities (called from ``swarmd.engine.runtime``)."""

from __future__ import annotations

from typing import Any

from swarmd.activities.tools import ToolDeps
from swarmd.agents.activities import make_activities
from swarmd.agents.config import load_baseline, load_templates
from swarmd.agents.store import UserStore
from swarmd.config import Settings
from swarmd.engine.state import StateStore


def register_activities(reg: Any, settings: Settings, state: StateStore, deps: ToolDeps) -> None:
    """``reg`` is a :class:`swarmd.engine.runtime.Registrar`."""
    if deps.lock is None:
        raise RuntimeError("user agents need the lock store (ToolDeps.lock)")
    store = UserStore(state, deps.lock)
    acts = make_activities(
        store,
        load_baseline(settings.agent_baseline),
        load_templates(settings.agent_templates_dir),
    )
    for name, fn in acts.items():
        reg.activity(name, fn)
