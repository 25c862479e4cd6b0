"""The swarm.tasks subscriber without a sidecar: what daprd is told to subscribe, how a
message becomes a run id, and how a message that can never be a run is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from swarmd.api.app import create_app
from swarmd.api.pubsub import ROUTE, derived_run_id, parse_task
from swarmd.config import Settings
from swarmd.errors import MalformedMessage, RequestError, ValidationFailed

GOOD = {"swarm": "pipeline", "input": {"task": "t"}}


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(
        api_token=SecretStr("t"), pubsub_enabled=True, app_api_token=SecretStr("app-secret")
    )
    with TestClient(create_app(settings, start_engine=False)) as c:
        c.headers["dapr-api-token"] = "app-secret"
        yield c


def test_daprd_is_told_the_topic_route_and_dead_letter_topic(client: TestClient) -> None:
    subs = client.get("/dapr/subscribe").json()
    assert subs == [
        {
            "pubsubname": "pubsub",
            "topic": "swarm.tasks",
            "route": ROUTE,
            "metadata": {},
            "deadLetterTopic": "swarm.tasks.dead",
        }
    ]


def test_subscriber_routes_need_daprs_app_token(client: TestClient) -> None:
    del client.headers["dapr-api-token"]
    assert client.post(ROUTE, json={"id": "1", "data": GOOD}).status_code == 401
    assert client.get("/dapr/subscribe").status_code == 401


def test_no_subscriber_without_pubsub() -> None:
    with TestClient(create_app(Settings(), start_engine=False)) as c:
        assert c.get("/dapr/subscribe").status_code == 404
        assert c.post(ROUTE, json={}).status_code == 404


def test_run_id_is_the_bodys_else_derived_from_the_cloudevent() -> None:
    _, rid = parse_task({"id": "e1", "source": "p", "data": {**GOOD, "run_id": "mine-1"}})
    assert rid == "mine-1"
    a = {"id": "e1", "source": "p", "data": GOOD}
    body, rid = parse_task(a)
    assert body.run_id == rid == derived_run_id(a)
    assert derived_run_id(dict(a)) == rid  # a redelivery: the same run
    assert derived_run_id({**a, "id": "e2"}) != rid  # another message: another run
    assert derived_run_id({**a, "source": "q"}) != rid


@pytest.mark.parametrize(
    ("data", "error", "field"),
    [
        ("{not json", MalformedMessage, "data"),
        ([1, 2], MalformedMessage, "data"),
        ({"input": {"task": "t"}, "colour": "red"}, ValidationFailed, "colour"),
        ({"swarm": "pipeline"}, ValidationFailed, "input"),
        ({**GOOD, "run_id": "bad id!"}, ValidationFailed, "run_id"),
    ],
)
def test_malformed_messages_are_refused_naming_the_field(
    data: Any, error: type[RequestError], field: str
) -> None:
    with pytest.raises(error) as exc:
        parse_task({"id": "e", "data": data})
    assert exc.value.field == field
    assert field in exc.value.message


def test_json_sent_as_text_is_accepted() -> None:
    body, _ = parse_task({"id": "e", "data": '{"swarm": "pipeline", "input": {"task": "t"}}'})
    assert body.swarm == "pipeline"


def test_a_refused_message_is_never_answered_retry(client: TestClient) -> None:
    # no sidecar here: the dead-letter publish fails, so daprd is told DROP (it forwards
    # the message to the dead-letter topic itself), never RETRY
    for data in ("{nope", {"swarm": "no-such-swarm", "input": {"task": "t"}}):
        r = client.post(ROUTE, json={"id": "e", "source": "s", "data": data})
        assert r.status_code == 200 and r.json() == {"status": "DROP"}
