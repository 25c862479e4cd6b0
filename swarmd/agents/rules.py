"""What a user agent's turn decides, as pure functions shared by every workflow version.

* :func:`check_turn`: may this message run (template still there, skill still
  valid, daily budget left)? Either the resolved :class:`Effective` config or the
  message fields that record why not.
* :func:`agent_input`: the agent loop's input (template + baseline + preferences +
  skill + conversation memory).
* :func:`reply_fields`, :func:`remembered`: what a finished turn writes to the
  message and the conversation memory (usage: ``swarmd.agents.store.usage_plus``).

No I/O here: the activities read and write the state store around these.
"""

from __future__ import annotations

from typing import Any

from swarmd.agents.config import Baseline, Effective, Profile, Template, effective
from swarmd.agents.store import MEMORY_AGENT, instance_id, now_iso
from swarmd.engine.models import AgentInput, AgentOutput
from swarmd.errors import ValidationFailed

#: a message's final statuses: nothing more happens to it
FINAL = frozenset({"answered", "failed", "budget_exhausted"})


def memory_prompt(memory: list[dict[str, str]]) -> str:
    if not memory:
        return ""
    lines = [f"{m['role']}: {m['content']}" for m in memory]
    return "\n\nConversation so far:\n" + "\n".join(lines)


def check_turn(
    baseline: Baseline,
    templates: dict[str, Template],
    raw_profile: dict[str, Any],
    msg: dict[str, Any],
    used_tokens: int,
) -> Effective | dict[str, Any]:
    """The effective config the message runs with, or the fields that end it unanswered
    (``status`` failed or budget_exhausted, with the ``error`` a user reads)."""
    profile = Profile.model_validate(raw_profile)
    template = templates.get(profile.template)
    if template is None:
        return {
            "status": "failed",
            "error": f"template {profile.template!r} is gone",
            "answered_at": now_iso(),
        }
    try:
        eff = effective(baseline, template, profile, msg.get("skill"))
    except ValidationFailed as exc:  # e.g. the skill was removed after the message
        return {"status": "failed", "error": exc.message, "answered_at": now_iso()}
    if used_tokens >= eff.max_daily_tokens:
        return {
            "status": "budget_exhausted",
            "error": (
                f"daily token budget exhausted: {used_tokens} of {eff.max_daily_tokens} tokens "
                "used today (UTC); it resets at 00:00 UTC"
            ),
            "answered_at": now_iso(),
        }
    return eff


def agent_input(user: str, eff: Effective, memory: list[dict[str, str]], text: str) -> AgentInput:
    return AgentInput(
        run_id=instance_id(user),
        agent=MEMORY_AGENT,
        role_prompt=eff.system_prompt + memory_prompt(memory),
        task=text,
        model=eff.model,
        tools=eff.tools,
        max_turns=eff.max_turns,
        user=user,
    )


def reply_fields(out: AgentOutput) -> dict[str, Any]:
    """The message's fields once its turn ended with ``out``."""
    return {
        "status": "answered" if out.status != "failed" else "failed",
        "reply": out.content,
        "error": out.error,
        "usage": {"tokens": out.usage.total_tokens, "calls": out.usage.calls},
        "answered_at": now_iso(),
    }


def remembered(
    memory: list[dict[str, str]], text: str, out: AgentOutput, keep: int
) -> list[dict[str, str]] | None:
    """The conversation memory after an answered turn (None: unchanged)."""
    if out.status == "failed" or not keep:
        return None
    memory = [
        *memory,
        {"role": "user", "content": text},
        {"role": "assistant", "content": out.content},
    ]
    return memory[-2 * keep :]
