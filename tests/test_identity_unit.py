"""Identity without a sidecar: OIDC JWTs against a local key set (offline), Slack
signatures, the settings that must come together, and the local Slack server."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from swarmd.api.app import create_app
from swarmd.config import Settings
from swarmd.devstack.slackserver import SlackServer

TOKEN = "operator-token"
ISSUER = "https://idp.example.test/"
AUDIENCE = "swarmd"
SECRET = "slack-signing-secret"


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {k: rsa.generate_private_key(public_exponent=65537, key_size=2048) for k in "ab"}


@pytest.fixture(scope="module")
def jwks_url(keys: dict[str, rsa.RSAPrivateKey]) -> Iterator[str]:
    """The identity provider's key set, served over HTTP on loopback (only key "a")."""
    doc = json.dumps({"keys": [_jwk(keys["a"], "a")]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(doc)))
            self.end_headers()
            self.wfile.write(doc)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


@pytest.fixture
def client(jwks_url: str) -> Iterator[TestClient]:
    settings = Settings(
        api_token=SecretStr(TOKEN),
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=jwks_url,
        oidc_user_claim="preferred_username",
        slack_signing_secret=SecretStr(SECRET),
        slack_bot_token=SecretStr("xoxb-test"),
    )
    with TestClient(create_app(settings, start_engine=False)) as c:
        yield c


def token(key: rsa.RSAPrivateKey, kid: str = "a", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "00u1",
        "preferred_username": "alice",
        "iat": now,
        "exp": now + 300,
        **claims,
    }
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, "RS256", {"kid": kid})


def me(c: TestClient, credential: str) -> Any:
    return c.get("/v1/me", headers={"Authorization": f"Bearer {credential}"})


def test_operator_and_oidc_users(client: TestClient, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    assert me(client, TOKEN).json() == {"user": None, "operator": True, "via": "operator"}
    assert me(client, token(keys["a"])).json() == {
        "user": "alice",
        "operator": False,
        "via": "oidc",
    }


@pytest.mark.parametrize(
    ("kid", "claims", "why"),
    [
        ("a", {"exp": int(time.time()) - 3600}, "expired"),
        ("a", {"aud": "someone-else"}, "audience"),
        ("a", {"iss": "https://evil.example/"}, "issuer"),
        ("a", {"preferred_username": None}, "preferred_username"),
        ("a", {"preferred_username": "no spaces please"}, "not a user id"),
        ("b", {}, "kid"),  # signed by a key the JWKS does not hold
    ],
)
def test_invalid_jwts_are_401(
    client: TestClient, keys: dict[str, rsa.RSAPrivateKey], kid: str, claims: dict, why: str
) -> None:
    r = me(client, token(keys[kid], kid=kid, **claims))
    assert r.status_code == 401, (why, r.text)
    assert r.json()["error"]["code"] == "unauthorized"


def test_a_jwt_signed_by_the_wrong_key_with_a_trusted_kid_is_401(
    client: TestClient, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    assert me(client, token(keys["b"], kid="a")).status_code == 401


def test_missing_and_unknown_credentials_are_401(client: TestClient) -> None:
    assert client.get("/v1/me").status_code == 401
    assert me(client, "nope").status_code == 401
    r = client.post("/v1/users/alice/tokens")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_operator_only_endpoints_refuse_users(
    client: TestClient, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    h = {"Authorization": f"Bearer {token(keys['a'])}"}
    for method, path in [("POST", "/v1/users/bob/tokens"), ("GET", "/v1/locks")]:
        r = client.request(method, path, headers=h)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_oidc_and_slack_settings_come_together() -> None:
    with pytest.raises(ValidationError, match="oidc_audience"):
        Settings(oidc_issuer=ISSUER, oidc_jwks_url="https://idp.example.test/jwks")
    with pytest.raises(ValidationError, match="slack_bot_token"):
        Settings(slack_signing_secret=SecretStr("s"))
    with pytest.raises(ValidationError, match="oidc_jwks_url"):
        Settings(oidc_issuer=ISSUER, oidc_audience="a", oidc_jwks_url="ftp://x")


JSON = {"Content-Type": "application/json"}  # what Slack sends events as


def _sign(body: bytes, ts: int, secret: str = SECRET) -> dict[str, str]:
    sig = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": "v0=" + sig}


def test_slack_signatures(client: TestClient) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "abc"}).encode()
    now = int(time.time())
    ok = client.post("/v1/slack/events", content=body, headers={**JSON, **_sign(body, now)})
    assert ok.status_code == 200 and ok.json() == {"challenge": "abc"}
    for headers, why in [
        ({}, "missing"),
        (_sign(body, now, "other-secret"), "invalid X-Slack-Signature"),
        (_sign(body, now - 301), "more than 300 s"),
        (_sign(body, now + 400), "more than 300 s"),
        ({**_sign(body, now), "X-Slack-Request-Timestamp": "soon"}, "not a Unix time"),
    ]:
        r = client.post("/v1/slack/events", content=body, headers={**JSON, **headers})
        assert r.status_code == 401 and why in r.json()["error"]["message"], r.text
    tampered = body.replace(b"abc", b"abd")
    r = client.post("/v1/slack/events", content=tampered, headers={**JSON, **_sign(body, now)})
    assert r.status_code == 401


def test_slack_routes_take_what_slack_sends(client: TestClient) -> None:
    """Slash commands come form-encoded, events as JSON: each reaches the signature
    check (a stale signature: 401), and only the other kind is a 415 naming the one
    the route takes."""
    form = b"command=%2Fagent-usage&user_id=U1&channel_id=D1&trigger_id=t1"
    stale = _sign(form, int(time.time()) - 600)
    kind = {"Content-Type": "application/x-www-form-urlencoded"}
    r = client.post("/v1/slack/commands", content=form, headers={**kind, **stale})
    assert r.status_code == 401 and "more than 300 s" in r.json()["error"]["message"], r.text
    as_json = {"Content-Type": "application/json"}
    r = client.post("/v1/slack/commands", content=b"{}", headers={**as_json, **stale})
    assert r.status_code == 415 and r.json()["error"]["field"] == "content-type"
    assert "application/x-www-form-urlencoded" in r.json()["error"]["message"]
    r = client.post("/v1/slack/events", content=form, headers={**kind, **_sign(form, 0)})
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]
    r = client.put("/v1/slack/commands", content=form, headers={**kind, **stale})
    assert r.status_code == 405  # no such operation: routing answers, not the 415 check
    body = b"{not json"
    r = client.post("/v1/slack/events", content=body, headers={**as_json, **_sign(body, 0)})
    assert r.status_code == 401  # the signature is checked before anything is parsed
    now = int(time.time())
    r = client.post("/v1/slack/events", content=body, headers={**as_json, **_sign(body, now)})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_slack_front_door_is_404_when_not_configured() -> None:
    with TestClient(create_app(Settings(api_token=SecretStr(TOKEN)), start_engine=False)) as c:
        r = c.post("/v1/slack/events", json={})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_configured"


def test_local_slack_server_checks_token_and_payloads() -> None:
    with TestClient(SlackServer("xoxb-good").app()) as s:
        good = {"Authorization": "Bearer xoxb-good"}
        post = "/api/chat.postMessage"
        assert s.post(post, json={"channel": "C1X", "text": "hi"}).json()["error"] == "not_authed"
        bad = {"Authorization": "Bearer xoxb-bad"}
        r = s.post(post, json={"channel": "C1X", "text": "hi"}, headers=bad)
        assert r.json() == {"ok": False, "error": "invalid_auth"}
        r = s.post(post, json={"channel": "nope", "text": "hi"}, headers=good)
        assert r.json()["error"] == "channel_not_found"
        assert s.post(post, json={"channel": "C1X"}, headers=good).json()["error"] == "no_text"
        r = s.post(post, json={"channel": "C1X", "text": "x", "thread_ts": "1"}, headers=good)
        assert r.json()["error"] == "invalid_thread_ts"
        r = s.post("/api/chat.postEphemeral", json={"channel": "D1X", "text": "x"}, headers=good)
        assert r.json()["error"] == "user_not_in_channel"
        ok = s.post(post, data={"channel": "D1X", "text": "hello", "token": "xoxb-good"})
        assert ok.json()["ok"] is True and ok.json()["channel"] == "D1X"
        msgs = s.get("/_control/messages").json()
        assert [(m["channel"], m["text"]) for m in msgs] == [("D1X", "hello")]
        assert all("token" not in c for c in s.get("/_control/calls").json())


def test_openapi_documents_identity_limits_and_slack(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    assert {"/v1/me", "/v1/users/{user}", "/v1/users/{user}/tokens"} <= set(paths)
    assert {"/v1/slack/events", "/v1/slack/commands"} <= set(paths)
    assert "429" in paths["/v1/runs"]["post"]["responses"]
    assert "429" in paths["/v1/agents/{user_id}/messages"]["post"]["responses"]
    assert "401" in paths["/v1/slack/events"]["post"]["responses"]
    for path, kind in [
        ("/v1/slack/events", "application/json"),
        ("/v1/slack/commands", "application/x-www-form-urlencoded"),
    ]:
        op = paths[path]["post"]
        assert list(op["requestBody"]["content"]) == [kind]
        assert op["responses"]["415"]["description"] == f"The body is not {kind}"
        headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
        assert headers == {"X-Slack-Request-Timestamp", "X-Slack-Signature"}
    form = paths["/v1/slack/commands"]["post"]["requestBody"]["content"]
    assert form["application/x-www-form-urlencoded"]["schema"]["required"] == [
        "command",
        "user_id",
        "channel_id",
    ]
    minted = doc["components"]["schemas"]["MintedToken"]["properties"]
    assert "Shown only in this answer" in minted["token"]["description"]
