"""The Slack front door on the real stack, against the local Slack Web API server
(swarmd/devstack/slackserver.py, checking the bot token and payloads). Requests are
signed here the way Slack signs them (HMAC-SHA256 of ``v0:<ts>:<body>``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from swarmd.devstack.launcher import Stack
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def slack_user() -> str:
    return "U" + uuid.uuid4().hex[:10].upper()


def signed(stack: Stack, body: bytes, ts: int | None = None, secret: str | None = None) -> dict:
    ts = int(time.time()) if ts is None else ts
    key = (secret or stack.slack_signing_secret).encode()
    sig = "v0=" + hmac.new(key, f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig}


def event(stack: Stack, ev: dict[str, Any], **kw: Any) -> httpx.Response:
    payload = {
        "type": "event_callback",
        "team_id": "T0LOCAL",
        "event_id": kw.pop("event_id", "Ev" + uuid.uuid4().hex[:12].upper()),
        "event": ev,
    }
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **signed(stack, body, **kw)}
    return httpx.post(f"{stack.api_url}/v1/slack/events", content=body, headers=headers)


def command(stack: Stack, user: str, name: str, text: str = "") -> httpx.Response:
    form = {
        "command": name,
        "text": text,
        "user_id": user,
        "channel_id": "D" + user[1:],
        "team_id": "T0LOCAL",
        "trigger_id": uuid.uuid4().hex,
        "response_url": "https://hooks.slack.invalid/commands/x",
    }
    body = urlencode(form).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **signed(stack, body)}
    t0 = time.monotonic()
    r = httpx.post(f"{stack.api_url}/v1/slack/commands", content=body, headers=headers)
    assert time.monotonic() - t0 < 3, "Slack wants an answer within 3 s"
    return r


def posted(stack: Stack, **match: Any) -> list[dict[str, Any]]:
    msgs = httpx.get(f"{stack.slack_url}/_control/messages").json()
    return [m for m in msgs if all(m.get(k) == v for k, v in match.items())]


def setup_agent(stack: Stack, user: str, template: str = "") -> dict[str, Any]:
    n = len(posted(stack, user=user, method="chat.postEphemeral"))
    r = command(stack, user, "/setup-agent", template)
    assert r.status_code == 200 and r.json()["response_type"] == "ephemeral", r.text
    msgs = wait_until(
        lambda: (m := posted(stack, user=user, method="chat.postEphemeral"))[n:] and m,
        timeout_s=60,
        what="the /setup-agent result",
    )
    last: dict[str, Any] = msgs[-1]
    return last


def test_setup_agent_twice_gives_one_agent(stack: Stack, api: httpx.Client) -> None:
    user = slack_user()
    first = setup_agent(stack, user, "engineer")
    assert "ready" in first["text"] and first["channel"] == "D" + user[1:]
    view = api.get(f"/v1/agents/{user}").json()
    assert view["template"] == "engineer"
    second = setup_agent(stack, user, "engineer")
    assert "already have an agent" in second["text"]
    again = api.get(f"/v1/agents/{user}").json()
    assert again["created_at"] == view["created_at"]
    assert again["workflow"]["instance_id"] == f"user-agent-{user}"


def test_a_signed_dm_reaches_the_senders_agent_and_the_reply_comes_back(
    stack: Stack, api: httpx.Client
) -> None:
    alice, bob = slack_user(), slack_user()
    for u in (alice, bob):
        setup_agent(stack, u)
    dm = "D" + alice[1:]
    eid = "Ev" + uuid.uuid4().hex[:12].upper()
    ev = {
        "type": "message",
        "channel_type": "im",
        "user": alice,
        "channel": dm,
        "text": "what is durable execution?",
        "ts": f"{int(time.time())}.000100",
    }
    t0 = time.monotonic()
    r = event(stack, ev, event_id=eid)
    assert r.status_code == 200 and time.monotonic() - t0 < 3
    assert event(stack, ev, event_id=eid).status_code == 200  # Slack's retry of the same event
    replies = wait_until(
        lambda: posted(stack, channel=dm, method="chat.postMessage"), timeout_s=60, what="reply"
    )
    msgs = api.get(f"/v1/agents/{alice}/messages").json()["messages"]
    assert [m["text"] for m in msgs] == ["what is durable execution?"]  # once, not twice
    assert replies[0]["text"] == msgs[0]["reply"] and replies[0]["thread_ts"] is None
    assert api.get(f"/v1/agents/{bob}/messages").json()["messages"] == []
    # a mention in a channel: to the sender's agent, the reply in the message's thread
    ts = f"{int(time.time())}.000200"
    mention = {
        "type": "app_mention",
        "user": bob,
        "channel": "C0GENERAL",
        "text": "<@U0SWARMDBOT> summarise the plan",
        "ts": ts,
    }
    assert event(stack, mention).status_code == 200
    thread = wait_until(
        lambda: posted(stack, channel="C0GENERAL", thread_ts=ts), timeout_s=60, what="reply"
    )
    bob_msgs = api.get(f"/v1/agents/{bob}/messages").json()["messages"]
    assert [m["text"] for m in bob_msgs] == ["summarise the plan"]
    assert thread[0]["text"] == bob_msgs[0]["reply"]
    # our own bot's messages come back as events too: ignored
    bot = {**ev, "bot_id": "B0SWARMD", "text": "a reply"}
    assert event(stack, bot).status_code == 200
    # /agent-usage: the sender's own usage, ephemeral
    n = len(posted(stack, user=alice))
    assert command(stack, alice, "/agent-usage").status_code == 200
    usage = wait_until(lambda: posted(stack, user=alice)[n:], timeout_s=30, what="usage")
    assert "1 messages" in usage[0]["text"] and usage[0]["method"] == "chat.postEphemeral"


def test_bad_signature_or_replayed_timestamp_is_401_and_nothing_happens(
    stack: Stack, api: httpx.Client
) -> None:
    user = slack_user()
    setup_agent(stack, user)
    dm = "D" + user[1:]
    ev = {"type": "message", "channel_type": "im", "user": user, "channel": dm, "text": "hi"}
    old = int(time.time()) - 6 * 60
    for kw in ({"secret": "not-the-secret"}, {"ts": old}):
        r = event(stack, ev, **kw)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized"
    body = b"command=%2Fsetup-agent&user_id=" + user.encode() + b"&channel_id=" + dm.encode()
    r = httpx.post(
        f"{stack.api_url}/v1/slack/commands",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            **signed(stack, body, ts=old),
        },
    )
    assert r.status_code == 401
    r = httpx.post(f"{stack.api_url}/v1/slack/events", json={"type": "url_verification"})
    assert r.status_code == 401  # unsigned
    # a correct one afterwards is answered: so the refused ones had no effect at all
    assert event(stack, ev).status_code == 200
    wait_until(lambda: posted(stack, channel=dm, method="chat.postMessage"), timeout_s=60)
    assert len(api.get(f"/v1/agents/{user}/messages").json()["messages"]) == 1
    assert len(posted(stack, channel=dm, method="chat.postMessage")) == 1


def test_url_verification_answers_the_challenge(stack: Stack) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "c-123"}).encode()
    headers = {"Content-Type": "application/json", **signed(stack, body)}
    r = httpx.post(f"{stack.api_url}/v1/slack/events", content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"challenge": "c-123"}


def test_a_deactivated_user_is_deprovisioned(stack: Stack, api: httpx.Client) -> None:
    user = slack_user()
    setup_agent(stack, user)
    token = api.post(f"/v1/users/{user}/tokens").json()["token"]
    me = httpx.get(f"{stack.api_url}/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["user"] == user
    r = event(stack, {"type": "user_change", "user": {"id": user, "deleted": True}})
    assert r.status_code == 200
    report = wait_until(
        lambda: api.get(f"/v1/users/{user}").json()["deprovisioned"],
        timeout_s=60,
        what="the deprovisioning report",
    )
    assert report["keys_left"] == 0 and report["workflows_left"] == 0 and report["clean"]
    assert report["agent"] is True and report["tokens_revoked"] == 1
    assert api.get(f"/v1/agents/{user}").status_code == 404
    me = httpx.get(f"{stack.api_url}/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401
