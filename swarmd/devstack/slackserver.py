"""A local server speaking Slack's Web API, for tests and the local stack.

No real Slack is reachable from our machines. This stands in for
``https://slack.com/api`` the way the model server stands in for an LLM provider:
the real client (``slack_sdk``) talks to it over HTTP, and it checks what Slack
checks, answering as Slack does (HTTP 200 with ``{"ok": false, "error": ...}``):

* the bot token: ``Authorization: Bearer xoxb-…`` (or a ``token`` field) must be the
  configured one: ``not_authed`` without one, ``invalid_auth`` for another;
* ``chat.postMessage``: ``channel`` (a ``C``/``D``/``G`` id, else
  ``channel_not_found``), ``text`` or ``blocks`` (else ``no_text``), an optional
  ``thread_ts`` (``<seconds>.<micros>``, else ``invalid_thread_ts``); answers
  ``{"ok", "channel", "ts", "message"}``;
* ``chat.postEphemeral``: the same plus ``user`` (else ``user_not_in_channel``);
  answers ``{"ok", "message_ts"}``;
* ``auth.test``: ``{"ok", "user_id", "team_id", "bot_id"}``;
* unknown methods: ``unknown_method``. Bodies as JSON or form-encoded, as Slack
  accepts both.

Control API (not Slack's): ``GET /_control/messages`` every accepted post (method,
channel, user, text, thread_ts, ts), ``DELETE /_control/messages`` clears,
``GET /_control/calls`` every call with its ``error`` (refused ones too),
``GET /health``.

    swarmd slackserver --port 8710 --token-file .data/secrets/slack-bot-token
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CHANNEL = re.compile(r"^[CDG][A-Z0-9]{2,}$")
TS = re.compile(r"^\d+\.\d{6}$")
TEAM_ID = "T0LOCAL"
BOT_USER = "U0SWARMDBOT"
BOT_ID = "B0SWARMD"


class SlackServer:
    def __init__(self, token: str) -> None:
        self.token = token
        self.messages: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._seq = itertools.count(1)

    def _ts(self) -> str:
        return f"{int(time.time())}.{next(self._seq) % 1_000_000:06d}"

    async def _params(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        if "json" in ctype:
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                return {}
            return data if isinstance(data, dict) else {}
        return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}

    async def api(self, request: Request) -> Response:
        method = request.path_params["method"]
        params = {**dict(request.query_params), **await self._params(request)}
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else params.get("token")
        result = self._call(method, params, token)
        with self._lock:
            self.calls.append({"method": method, "error": result.get("error"), **_public(params)})
        return JSONResponse(result)

    def _call(self, method: str, p: dict[str, Any], token: str | None) -> dict[str, Any]:
        if not token:
            return {"ok": False, "error": "not_authed"}
        if token != self.token:
            return {"ok": False, "error": "invalid_auth"}
        if method == "auth.test":
            return {"ok": True, "team_id": TEAM_ID, "user_id": BOT_USER, "bot_id": BOT_ID}
        if method not in ("chat.postMessage", "chat.postEphemeral"):
            return {"ok": False, "error": "unknown_method"}
        channel = p.get("channel")
        if not isinstance(channel, str) or not CHANNEL.match(channel):
            return {"ok": False, "error": "channel_not_found"}
        text, blocks = p.get("text"), p.get("blocks")
        if not (isinstance(text, str) and text.strip()) and not blocks:
            return {"ok": False, "error": "no_text"}
        thread_ts = p.get("thread_ts")
        if thread_ts is not None and not (isinstance(thread_ts, str) and TS.match(thread_ts)):
            return {"ok": False, "error": "invalid_thread_ts"}
        user = p.get("user")
        if method == "chat.postEphemeral" and not isinstance(user, str):
            return {"ok": False, "error": "user_not_in_channel"}
        ts = self._ts()
        record = {
            "method": method,
            "channel": channel,
            "user": user,
            "text": text,
            "thread_ts": thread_ts,
            "ts": ts,
        }
        with self._lock:
            self.messages.append(record)
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": ts}
        message = {"type": "message", "bot_id": BOT_ID, "user": BOT_USER, "text": text, "ts": ts}
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    async def get_messages(self, _: Request) -> Response:
        with self._lock:
            return JSONResponse(list(self.messages))

    async def clear_messages(self, _: Request) -> Response:
        with self._lock:
            self.messages.clear()
            self.calls.clear()
        return Response(status_code=204)

    async def get_calls(self, _: Request) -> Response:
        with self._lock:
            return JSONResponse(list(self.calls))

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/{method}", self.api, methods=["GET", "POST"]),
                Route("/_control/messages", self.get_messages, methods=["GET"]),
                Route("/_control/messages", self.clear_messages, methods=["DELETE"]),
                Route("/_control/calls", self.get_calls, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
            ]
        )


def _public(params: dict[str, Any]) -> dict[str, Any]:
    """What a call log may show: never the token."""
    return {k: v for k, v in params.items() if k in ("channel", "user", "thread_ts")}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="swarmd slackserver", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8710)
    p.add_argument(
        "--token-file", type=Path, required=True, help="file holding the bot token it accepts"
    )
    args = p.parse_args(argv)
    server = SlackServer(args.token_file.read_text().strip())
    uvicorn.run(server.app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
