"""What the Slack front door does after it has acknowledged a request.

Slack wants an answer within 3 s, so the request handler (``swarmd.api.slack``)
only verifies, deduplicates and acknowledges; the work runs here, in background
tasks of the app, through the same code as the ``/v1/agents`` API, acting as the
Slack user (a :class:`~swarmd.identity.caller.Caller` with ``via="slack"``, so the
per-user limits apply):

* a DM or a mention: the text becomes a message of the sender's agent; the reply is
  posted back to the same channel (a mention in a channel: in its thread) with
  ``chat.postMessage``;
* ``/setup-agent [template]``: provisions the sender's agent (idempotent);
* ``/agent-usage``: the sender's usage, ephemeral;
* ``user_change`` of a deleted user: the user's agent is deprovisioned, its tokens
  revoked, and the report stored (``GET /v1/users/{user}``).

A Slack user's swarmd user id is its Slack user id (``U…``).

Not durable: a process killed between accepting a Slack message and posting the
reply leaves the reply in the agent's messages but does not post it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import Response

from swarmd.api import agents
from swarmd.api.deps import Services
from swarmd.errors import AgentNotFound, RequestError, SwarmdError, TooManyRequests
from swarmd.identity.caller import Caller
from swarmd.slack.webapi import SlackApi

log = logging.getLogger("swarmd.slack")

_MENTION = re.compile(r"<@[A-Z0-9]+(\|[^>]*)?>")
DEPROVISIONED_KEY = "swarmd-user|{user}|deprovisioned"


def deprovision_key(user: str) -> str:
    return DEPROVISIONED_KEY.format(user=user)


class FrontDoor:
    """Built by the composition root when the Slack settings are there; closed (its
    background tasks cancelled) when the API stops."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.identity = services.identity
        self.settings = services.settings
        self.slack = SlackApi(self.settings)
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` after the request has been answered; errors are logged."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("slack: %s failed", what)

        task = asyncio.get_running_loop().create_task(guarded())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        for t in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # -- messages ----------------------------------------------------------------
    async def converse(self, user: str, channel: str, text: str, thread_ts: str | None) -> None:
        """The text goes to the user's agent; its reply back to the channel."""
        c = agents.Ctx(self.services)
        caller = Caller(user=user, via="slack")
        text = _MENTION.sub("", text).strip()
        if not text:
            return
        try:
            accepted = await agents.post_message(user, agents.NewMessage(text=text), c, caller)
        except AgentNotFound:
            await self.slack.post(
                channel, "You have no agent yet: run `/setup-agent [template]` first.", thread_ts
            )
            return
        except TooManyRequests as exc:
            wait = max(1, math.ceil(exc.retry_after_s))
            await self.slack.post(
                channel, f"Slow down: {exc.message}. Try again in {wait} s.", thread_ts
            )
            return
        except SwarmdError as exc:  # e.g. the state store unreachable: say so, then log
            await self.slack.post(channel, f"Sorry, that failed: {exc.message}", thread_ts)
            raise
        msg = await self._reply(c, user, accepted["message_id"])
        if msg["status"] == "answered":
            reply = str(msg.get("reply") or "")
        elif msg["status"] in agents.FINAL:
            reply = f"(no answer: {msg.get('error') or msg['status']})"
        else:
            reply = "(your agent is still working on this; ask again later)"
        await self.slack.post(channel, reply, thread_ts)

    async def _reply(self, c: agents.Ctx, user: str, mid: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.slack_reply_timeout_s
        while True:
            left = max(0.0, min(60.0, deadline - loop.time()))
            msg = await agents.get_message(user, mid, c, wait_s=left)
            if msg["status"] in agents.FINAL or loop.time() >= deadline:
                return msg

    # -- slash commands ----------------------------------------------------------
    async def setup_agent(self, user: str, channel: str, template: str) -> None:
        c = agents.Ctx(self.services)
        caller = Caller(user=user, via="slack")
        body = agents.Provision(user_id=user, template=template)
        try:
            view = await agents.provision(body, c, Response(), caller)
        except RequestError as exc:
            await self.slack.post_ephemeral(channel, user, f"Could not set up: {exc.message}")
            return
        if view["created"]:
            text = (
                f"Your agent is ready (template `{template}`). "
                "Send me a direct message, or mention me, to talk to it."
            )
        else:
            text = f"You already have an agent (template `{view['template']}`)."
        await self.slack.post_ephemeral(channel, user, text)

    async def usage(self, user: str, channel: str) -> None:
        c = agents.Ctx(self.services)
        try:
            u = await agents.get_usage(user, c)
        except AgentNotFound:
            await self.slack.post_ephemeral(
                channel, user, "You have no agent yet: run `/setup-agent [template]` first."
            )
            return
        today, total = u["today"], u["total"]
        await self.slack.post_ephemeral(
            channel,
            user,
            f"Today ({u['day']}, UTC): {today['tokens']} of {u['max_daily_tokens']} tokens, "
            f"{today['messages']} messages, {today['jobs']} scheduled jobs. "
            f"In total: {total['tokens']} tokens, {total['messages']} messages.",
        )

    # -- deactivation ------------------------------------------------------------
    async def deprovision(self, user: str) -> None:
        """Revoke the user's tokens, deprovision its agent, store the report."""
        revoked = await self.identity.tokens.revoke(user)
        report: dict[str, Any] = {"agent": False, "keys_left": 0, "workflows_left": 0}
        try:
            out = await agents.deprovision(user, agents.Ctx(self.services))
        except AgentNotFound:
            pass
        else:
            report = {
                "agent": True,
                "deleted_keys": out["deleted_keys"],
                "purged_workflows": out["purged_workflows"],
                "keys_left": len(out["keys_left"]),
                "workflows_left": len(out["workflows_left"]),
            }
        report.update(
            user=user,
            tokens_revoked=revoked,
            clean=report["keys_left"] == 0 and report["workflows_left"] == 0,
            at=datetime.now(UTC).isoformat(),
            reason="slack user_change: deleted",
        )
        await self.identity.state.save(deprovision_key(user), report)
        log.info(
            "slack: user deactivated, deprovisioned",
            extra={"user": user, "keys_left": report["keys_left"], "clean": report["clean"]},
        )
