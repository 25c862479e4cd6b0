"""Run-control endpoints without a sidecar: auth first, then input checks naming the
field, then 503 because no sidecar is there. The real-stack behaviour is in
tests/integration/test_run_control.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from swarmd.api.app import create_app
from swarmd.config import Settings

TOKEN = "test-token"
ENDPOINTS = [
    ("GET", "/v1/runs/r1/stream"),
    ("POST", "/v1/runs/r1/events/approval"),
    ("POST", "/v1/runs/r1/terminate"),
    ("POST", "/v1/runs/r1/pause"),
    ("POST", "/v1/runs/r1/resume"),
    ("DELETE", "/v1/runs/r1"),
]


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(api_token=SecretStr(TOKEN))
    with TestClient(create_app(settings, start_engine=False)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_missing_or_wrong_token_is_401(client: TestClient, method: str, path: str) -> None:
    del client.headers["Authorization"]
    r = client.request(method, path)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.request(method, path, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401, r.text


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_without_a_sidecar_it_is_503(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "dependency_unavailable"


@pytest.mark.parametrize("name", ["a b", "x" * 65, "caf\u00e9", "a:b", "a,b"])
def test_bad_event_name_is_422_naming_name(client: TestClient, name: str) -> None:
    r = client.post(f"/v1/runs/r1/events/{name}", json={"approved": True})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "name" and "name" in err["message"]


def test_terminate_body_is_validated(client: TestClient) -> None:
    r = client.post("/v1/runs/r1/terminate", json={"reason": "x", "bogus": 1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "bogus", r.text
    r = client.post("/v1/runs/r1/terminate", json={"reason": "x" * 2001})
    assert r.status_code == 422 and r.json()["error"]["field"] == "reason", r.text


def test_openapi_documents_run_control(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for method, path in ENDPOINTS:
        op = paths[path.replace("r1", "{run_id}").replace("approval", "{name}")][method.lower()]
        assert op["summary"] and {"401", "404"} <= set(op["responses"]), (method, path)
    for action in ("terminate", "pause", "resume", "events/{name}"):
        assert "409" in paths[f"/v1/runs/{{run_id}}/{action}"]["post"]["responses"]
    assert "409" in paths["/v1/runs/{run_id}"]["delete"]["responses"]
    stream = paths["/v1/runs/{run_id}/stream"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in stream
