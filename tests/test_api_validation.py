"""Bad input gets a clear 4xx naming the field; nothing here needs a sidecar."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from swarmd.api.agents import Customise
from swarmd.api.app import create_app
from swarmd.config import Settings

TOKEN = "test-token"


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(api_token=SecretStr(TOKEN), max_body_bytes=4096)
    with TestClient(create_app(settings, start_engine=False)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


def test_health_needs_no_token(client: TestClient) -> None:
    del client.headers["Authorization"]
    assert client.get("/healthz").status_code == 200


def test_missing_and_wrong_token_are_401(client: TestClient) -> None:
    body = {"swarm": "scatter_gather", "input": {"task": "x", "agents": 1}}
    del client.headers["Authorization"]
    r = client.post("/v1/runs", json=body)
    assert r.status_code == 401 and "bearer" in r.json()["error"]["message"].lower()
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.post("/v1/runs", json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"swarm": "nope", "input": {"task": "x", "agents": 1}}, "swarm"),
        ({"swarm": "scatter_gather", "input": {"task": "x", "agents": 0}}, "input.agents"),
        ({"swarm": "scatter_gather", "input": {"agents": 2}}, "input.task"),
        (
            {"swarm": "scatter_gather", "input": {"task": "x", "agents": 2, "bogus": 1}},
            "input.bogus",
        ),
        ({"input": {"task": "x", "agents": 1}}, "swarm"),
        (
            {"swarm": "scatter_gather", "input": {"task": "x", "agents": 1}, "run_id": "a b"},
            "run_id",
        ),
    ],
)
def test_bad_input_is_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/v1/runs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_oversized_body_is_413(client: TestClient) -> None:
    body = {"swarm": "scatter_gather", "input": {"task": "x" * 10_000, "agents": 1}}
    r = client.post("/v1/runs", json=body)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_malformed_json_is_400_naming_the_body(client: TestClient) -> None:
    r = client.post("/v1/runs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json" and r.json()["error"]["field"] == "body"


def test_a_body_that_is_not_json_is_415(client: TestClient) -> None:
    r = client.post("/v1/runs", content=b"task=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["field"] == "content-type"


def test_openapi_documents_the_run_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/runs" in paths and "/v1/runs/{run_id}" in paths


def test_malformed_inline_spec_is_422_naming_the_field(client: TestClient) -> None:
    spec = {"name": "x", "pattern": "debate", "agents": [{"name": "a", "role": "r"}]}
    r = client.post("/v1/runs", json={"spec": spec, "input": {"task": "t"}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "spec"
    assert "at least 2 agents" in r.json()["error"]["message"]
    r = client.post("/v1/runs", json={"swarm": "debate", "input": {"task": "t", "agents": 3}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "input.agents"


def test_a_skill_name_the_api_refuses_is_invalid_in_the_schema_too(client: TestClient) -> None:
    """schemathesis found ``PATCH /v1/agents/{user}`` with skill ``"¥"``: valid by the
    schema, refused by the API. Now the schema and the body model refuse it alike."""
    doc = client.get("/openapi.json").json()
    skills = doc["components"]["schemas"]["Customise"]["properties"]["skills"]["anyOf"][0]
    assert skills["additionalProperties"] is False and list(skills["patternProperties"])
    with pytest.raises(ValidationError) as err:  # the route's body model (422 via the handler)
        Customise.model_validate({"skills": {"¥": None}})
    assert err.value.errors()[0]["loc"][:2] == ("skills", "¥")
    assert Customise.model_validate({"skills": {"notes-1": None}}).skills == {"notes-1": None}


def test_openapi_documents_what_health_and_provisioning_answer(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert "503" in paths["/livez"]["get"]["responses"]
    existed = paths["/v1/agents"]["post"]["responses"]["200"]
    assert existed["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProvisionedAgent"
    }
