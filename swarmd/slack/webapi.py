"""Posting to Slack through its Web API (``slack_sdk``'s client, whose retry handlers
honour Slack's 429 ``Retry-After``). The base URL is ``SWARMD_SLACK_API_URL``."""

from __future__ import annotations

import asyncio
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from swarmd.config import Settings
from swarmd.errors import DependencyUnavailable

#: Slack refuses longer ``text`` (it truncates at 40,000 characters)
MAX_TEXT = 39_000


class SlackApi:
    def __init__(self, settings: Settings) -> None:
        if settings.slack_bot_token is None:
            raise ValueError("the Slack front door needs SWARMD_SLACK_BOT_TOKEN")
        self.client = WebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=settings.slack_api_url + "/",
            timeout=30,
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=3),
                RateLimitErrorRetryHandler(max_retry_count=3),
                ServerErrorRetryHandler(max_retry_count=3),
            ],
        )

    async def post(self, channel: str, text: str, thread_ts: str | None = None) -> str:
        """``chat.postMessage``; returns the message's ``ts``."""
        out = await self._call(
            "chat_postMessage", channel=channel, text=_clip(text), thread_ts=thread_ts
        )
        return str(out.get("ts", ""))

    async def post_ephemeral(self, channel: str, user: str, text: str) -> None:
        """``chat.postEphemeral``: seen only by ``user``."""
        await self._call("chat_postEphemeral", channel=channel, user=user, text=_clip(text))

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = await asyncio.to_thread(getattr(self.client, method), **kwargs)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            raise DependencyUnavailable(f"Slack refused {method}: {error or exc}") from exc
        except OSError as exc:
            raise DependencyUnavailable(f"Slack unreachable ({method}): {exc}") from exc
        data: dict[str, Any] = dict(resp.data) if isinstance(resp.data, dict) else {}
        return data


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
