"""``/v1/slack``: the Slack app's request URLs (Events API and slash commands).

No bearer token here: every request must carry Slack's signature (signing secret,
timestamp at most 5 minutes off), or it is refused with 401 and nothing happens.
Each request is answered at once (Slack wants an answer within 3 s); the work runs
in the background (swarmd.slack.frontdoor). Slack retries a delivery it thinks
failed: an event is done at most once per ``event_id`` (a slash command per
``trigger_id``), remembered for an hour in the state store.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request

from swarmd.api.deps import Services, ServicesDep
from swarmd.errors import InvalidJson, NotConfigured, ValidationFailed
from swarmd.slack.frontdoor import FrontDoor
from swarmd.slack.verify import verify

router = APIRouter(prefix="/v1/slack", tags=["slack"])

#: how long a delivered event id is remembered (Slack retries within minutes)
DEDUPE_TTL_S = 3600
_SIGNED: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid or stale Slack signature: nothing was done"},
    404: {"description": "The Slack front door is not configured"},
}
#: the headers Slack signs every request with (checked by the handler, so a missing
#: one is a 401 like a wrong one, not a 422)
_SIGNATURE_HEADERS = [
    {
        "name": "X-Slack-Request-Timestamp",
        "in": "header",
        "required": True,
        "description": "Unix time Slack sent the request at; refused more than 5 minutes off",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    {
        "name": "X-Slack-Signature",
        "in": "header",
        "required": True,
        "description": "v0= HMAC-SHA256 of v0:<timestamp>:<body> with the signing secret",
        "schema": {"type": "string", "pattern": "^v0=[0-9a-f]{64}$"},
    },
]
#: what Slack posts to the Events API request URL (JSON); the handler ignores the rest
_EVENT_BODY = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "examples": ["event_callback", "url_verification"]},
        "challenge": {"type": "string", "description": "url_verification: echoed back"},
        "team_id": {"type": "string"},
        "api_app_id": {"type": "string"},
        "event_id": {"type": "string", "description": "a retried delivery is done once"},
        "event_time": {"type": "integer"},
        "event": {
            "type": "object",
            "description": "message (channel_type im), app_mention or user_change",
            "properties": {
                "type": {"type": "string"},
                "user": {"description": "the sender's id; user_change: the user object"},
                "channel": {"type": "string"},
                "channel_type": {"type": "string"},
                "text": {"type": "string"},
                "ts": {"type": "string"},
                "thread_ts": {"type": "string"},
                "bot_id": {"type": "string", "description": "set: a bot's message, ignored"},
                "subtype": {"type": "string", "description": "set: an edit etc., ignored"},
            },
        },
    },
    "example": {
        "type": "event_callback",
        "team_id": "T0LOCAL",
        "event_id": "Ev0EXAMPLE",
        "event": {
            "type": "message",
            "channel_type": "im",
            "user": "U0ALICE",
            "channel": "D0ALICE",
            "text": "what is durable execution?",
            "ts": "1764600000.000100",
        },
    },
}
#: what Slack posts to a slash command's request URL (form-encoded)
_COMMAND_BODY = {
    "type": "object",
    "required": ["command", "user_id", "channel_id"],
    "properties": {
        "command": {"type": "string", "examples": ["/setup-agent", "/agent-usage"]},
        "text": {"type": "string", "description": "/setup-agent: the template (optional)"},
        "user_id": {"type": "string"},
        "user_name": {"type": "string"},
        "channel_id": {"type": "string"},
        "channel_name": {"type": "string"},
        "team_id": {"type": "string"},
        "trigger_id": {"type": "string", "description": "a retried delivery is done once"},
        "response_url": {"type": "string"},
        "api_app_id": {"type": "string"},
    },
    "example": {
        "command": "/setup-agent",
        "text": "engineer",
        "user_id": "U0ALICE",
        "channel_id": "D0ALICE",
        "team_id": "T0LOCAL",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    },
}


def _raw_body(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads (and verifies) its raw body: the body it
    takes, and the signature headers. The media type is also what the app lets
    through to it (swarmd.api.app.BodyMediaTypes); anything else is a 415."""
    return {
        "parameters": _SIGNATURE_HEADERS,
        "requestBody": {"required": True, "content": {media_type: {"schema": schema}}},
    }


async def _signed_body(request: Request, services: Services) -> tuple[FrontDoor, bytes]:
    door, settings = services.slack, services.settings
    if door is None or settings.slack_signing_secret is None:
        raise NotConfigured(
            "the Slack front door is not configured (SWARMD_SLACK_SIGNING_SECRET, "
            "SWARMD_SLACK_BOT_TOKEN)"
        )
    body = await request.body()
    verify(settings.slack_signing_secret.get_secret_value(), request.headers, body)
    return door, body


async def _first_time(door: FrontDoor, kind: str, ident: str | None) -> bool:
    """True the first time this delivery is seen (always True without an id)."""
    if not ident:
        return True
    return await door.identity.state.save(
        f"swarmd-slack-{kind}|{ident}", {"seen": True}, first_write=True, ttl_s=DEDUPE_TTL_S
    )


@router.post("/events", responses=_SIGNED, openapi_extra=_raw_body("application/json", _EVENT_BODY))
async def events(request: Request, services: ServicesDep) -> dict[str, Any]:
    """The Events API request URL: ``url_verification``, and ``event_callback`` with
    ``message`` (direct messages), ``app_mention`` and ``user_change``."""
    door, body = await _signed_body(request, services)
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidJson(f"body: not valid JSON ({exc})", field="body") from exc
    if not isinstance(payload, dict):
        raise ValidationFailed("body: not a JSON object", field="body")
    if payload.get("type") == "url_verification":
        return {"challenge": payload.get("challenge")}
    ev = payload.get("event")
    if payload.get("type") != "event_callback" or not isinstance(ev, dict):
        return {}
    if not await _first_time(door, "event", payload.get("event_id")):
        return {}  # a retried delivery: already being handled
    kind = ev.get("type")
    if kind == "user_change":
        u = ev.get("user") or {}
        if isinstance(u, dict) and u.get("deleted") is True and isinstance(u.get("id"), str):
            door.spawn("deprovision", door.deprovision(u["id"]))
        return {}
    from_person = isinstance(ev.get("user"), str) and not ev.get("bot_id") and not ev.get("subtype")
    direct = kind == "message" and ev.get("channel_type") == "im"
    if from_person and (direct or kind == "app_mention") and isinstance(ev.get("channel"), str):
        thread = ev.get("thread_ts") or (ev.get("ts") if kind == "app_mention" else None)
        door.spawn(
            "message",
            door.converse(ev["user"], ev["channel"], str(ev.get("text") or ""), thread),
        )
    return {}


@router.post(
    "/commands",
    responses=_SIGNED,
    openapi_extra=_raw_body("application/x-www-form-urlencoded", _COMMAND_BODY),
)
async def commands(request: Request, services: ServicesDep) -> dict[str, Any]:
    """The slash commands' request URL (form-encoded): ``/setup-agent [template]`` and
    ``/agent-usage``. Answers with an ephemeral acknowledgement; the result follows
    as an ephemeral message."""
    door, body = await _signed_body(request, services)
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    command, user, channel = form.get("command"), form.get("user_id"), form.get("channel_id")
    if not user or not channel:
        raise ValidationFailed(
            "user_id: a slash command names its user and channel", field="user_id"
        )
    if not await _first_time(door, "command", form.get("trigger_id")):
        return {"response_type": "ephemeral", "text": "Already on it."}
    if command == "/setup-agent":
        template = (form.get("text") or "").strip() or door.settings.slack_default_template
        door.spawn("setup-agent", door.setup_agent(user, channel, template))
        return {"response_type": "ephemeral", "text": f"Setting up your agent (`{template}`)…"}
    if command == "/agent-usage":
        door.spawn("agent-usage", door.usage(user, channel))
        return {"response_type": "ephemeral", "text": "Looking up your usage…"}
    return {
        "response_type": "ephemeral",
        "text": f"Unknown command {command!r}: try /setup-agent [template] or /agent-usage.",
    }
