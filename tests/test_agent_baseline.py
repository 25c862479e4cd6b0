"""User-agent templates and the operator baseline: customisation narrows, never widens."""

from __future__ import annotations

from datetime import datetime

import pytest

from swarmd.agents.config import (
    Baseline,
    BaselineViolation,
    Preferences,
    Profile,
    Skill,
    check_customisation,
    check_user_id,
    effective,
    load_baseline,
    load_templates,
)
from swarmd.errors import ValidationFailed
from swarmd.workflows.user_agent import next_fire

BASE = Baseline(denied_tools=["http_get"], max_daily_tokens=1000, max_turns=5)


def test_shipped_templates_and_baseline_load() -> None:
    templates = load_templates()
    assert {"analyst", "engineer", "manager"} <= set(templates)
    assert "http_get" in load_baseline().denied_tools


def test_template_tools_denied_by_baseline_are_dropped_and_limits_capped() -> None:
    eng = load_templates()["engineer"]
    assert "http_get" in eng.tools
    p = Profile(user_id="u1", template="engineer", created_at="now")
    eff = effective(BASE, eng, p)
    assert "http_get" not in eff.tools
    assert eff.max_daily_tokens == 1000 and eff.max_turns == 5


@pytest.mark.parametrize(
    ("prefs", "skills", "field"),
    [
        (Preferences(tools=["http_get"]), {}, "preferences.tools"),
        (Preferences(tools=["calculator", "memory_read"]), {}, "preferences.tools"),
        (Preferences(max_daily_tokens=1001), {}, "preferences.max_daily_tokens"),
        (Preferences(max_turns=6), {}, "preferences.max_turns"),
        (Preferences(read_only_data=False), {}, "preferences.read_only_data"),
        (Preferences(), {"web": Skill(prompt="browse", tools=["http_get"])}, "skills.web.tools"),
        (
            Preferences(tools=["memory_read"]),
            {"w": Skill(prompt="write", tools=["memory_write"])},
            "skills.w.tools",
        ),
    ],
)
def test_widening_is_refused_naming_the_field(
    prefs: Preferences, skills: dict[str, Skill], field: str
) -> None:
    manager = load_templates()["manager"]  # tools: memory_read, memory_write
    with pytest.raises(BaselineViolation) as err:
        check_customisation(BASE, manager, prefs, skills)
    assert err.value.field == field
    assert err.value.status_code == 403
    assert field in err.value.message


def test_narrowing_is_accepted_and_applied() -> None:
    manager = load_templates()["manager"]
    prefs = Preferences(tools=["memory_read"], max_daily_tokens=10, max_turns=2, note="be brief")
    skills = {"recall": Skill(prompt="Recall what I said.", tools=["memory_read"])}
    check_customisation(BASE, manager, prefs, skills)
    p = Profile(user_id="u", template="manager", preferences=prefs, skills=skills, created_at="x")
    eff = effective(BASE, manager, p, skill="recall")
    assert eff.tools == ["memory_read"]
    assert (eff.max_daily_tokens, eff.max_turns) == (10, 2)
    assert "be brief" in eff.system_prompt and "Recall what I said." in eff.system_prompt


def test_user_ids_are_validated() -> None:
    assert check_user_id("alice-1") == "alice-1"
    for bad in ("", "a|b", "../x", "a" * 65, "-x"):
        with pytest.raises(ValidationFailed):
            check_user_id(bad)


def test_next_fire_every_and_daily() -> None:
    now = datetime(2026, 1, 1, 10, 30)
    assert next_fire({"every_s": 2}, now) == datetime(2026, 1, 1, 10, 30, 2)
    assert next_fire({"daily_at": "09:00"}, now) == datetime(2026, 1, 2, 9, 0)
    assert next_fire({"daily_at": "11:00"}, now) == datetime(2026, 1, 1, 11, 0)


async def test_a_reply_stored_on_another_thread_wakes_the_waiter() -> None:
    import asyncio
    import threading

    from swarmd.agents import notify

    with notify.waiter("u1", 3) as stored, notify.waiter("u1", 4) as other:
        threading.Thread(target=notify.notify, args=("u1", 3)).start()
        await asyncio.wait_for(stored.wait(), 5)
        assert not other.is_set()
    assert notify._waiters == {}
