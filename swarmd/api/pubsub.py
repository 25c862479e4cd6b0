"""``swarm.tasks``: start runs from a Dapr pub/sub topic (dapr-ext-fastapi's ``DaprApp``).

A message's data is exactly a ``POST /v1/runs`` body. Each message is answered
with one of Dapr's statuses:

* ``SUCCESS``: the run was started, or it already existed (a redelivered or
  republished message: the run id is the body's ``run_id``, else derived from
  the CloudEvent's ``source`` and ``id``, so one message never makes two runs);
* ``RETRY``: backpressure (``SWARMD_PUBSUB_MAX_IN_FLIGHT`` runs in flight
  cluster-wide, approximately: concurrent deliveries may pass it by a few) or a
  transient sidecar error. daprd's inbound resiliency policy retries it and the
  broker keeps it pending, so an app that dies here loses nothing;
* a message that can never become a run (bad JSON, not an object, an invalid
  body or spec, an unknown swarm, a run id reused for another request) is
  published to ``swarm.tasks.dead`` with the reason and answered ``SUCCESS``: never
  retried. If even that publish fails it is answered ``DROP``, and daprd forwards
  the original message to the subscription's dead-letter topic itself.

Dead letters are counted once each, by reason, in
``swarmd_pubsub_dead_letters_total{reason}`` by the app's own declarative
subscription to ``swarm.tasks.dead`` (see :func:`on_dead_letter`).

daprd calls the routes without the API's bearer token; with ``APP_API_TOKEN`` set
(daprd sends it as ``dapr-api-token``) the route refuses calls without it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Annotated, Any, Literal

import grpc
from dapr.ext.fastapi import DaprApp
from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ValidationError

from swarmd.api import runs
from swarmd.api.deps import MetricsDep, Services, ServicesDep, SettingsDep
from swarmd.config import Settings
from swarmd.engine.publisher import DEAD_TOPIC, TASKS_TOPIC
from swarmd.errors import (
    DependencyUnavailable,
    MalformedMessage,
    RequestError,
    Unauthorized,
    ValidationFailed,
    field_path,
)
from swarmd.identity.caller import Caller

log = logging.getLogger("swarmd.api.pubsub")

ROUTE = "/v1/pubsub/tasks"
#: the route of the declarative dead-letter subscription (components/subscriptions.yaml)
DEAD_ROUTE = "/v1/pubsub/dead-letters"


class TopicResponse(BaseModel):
    """What daprd does with the message: ack it, redeliver it later, or dead-letter it."""

    status: Literal["SUCCESS", "RETRY", "DROP"]


class DeadLetter(BaseModel):
    """Data of a ``swarm.tasks.dead`` event (CloudEvent type ``swarmd.task.dead``)."""

    reason: str
    message: str
    field: str | None = None
    #: the refused message's CloudEvent id and source
    cloudevent_id: str | None = None
    source: str | None = None
    data: Any = None


def derived_run_id(event: dict[str, Any]) -> str:
    """The run id of a message without ``run_id``: the same CloudEvent (same source and
    id: a redelivery, or a producer republishing it) always gives the same run."""
    key = f"{event.get('source', '')}\0{event.get('id', '')}"
    return "ce-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def parse_task(event: dict[str, Any]) -> tuple[runs.StartRun, str]:
    """The ``POST /v1/runs`` body inside a CloudEvent, and its run id (also set in it)."""
    data = event.get("data")
    if data is None and "data_base64" in event:
        raise MalformedMessage("data: binary data; send a JSON object", field="data")
    if isinstance(data, str):  # published as text, or JSON that daprd could not parse
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise MalformedMessage(f"data: not valid JSON ({exc})", field="data") from None
    if not isinstance(data, dict):
        raise MalformedMessage("data: must be a JSON object (a POST /v1/runs body)", field="data")
    try:
        body = runs.StartRun.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = field_path(err["loc"]) or None
        raise ValidationFailed(f"{field}: {err['msg']}", field=field) from None
    run_id = body.run_id or derived_run_id(event)
    return body.model_copy(update={"run_id": run_id}), run_id


def _check_app_token(
    settings: SettingsDep,
    token: Annotated[str | None, Header(alias="dapr-api-token")] = None,
) -> None:
    expected = settings.app_api_token.get_secret_value() if settings.app_api_token else None
    if expected is not None and (token is None or not hmac.compare_digest(token, expected)):
        raise Unauthorized("missing or wrong dapr-api-token (APP_API_TOKEN)")


def router(settings: Settings) -> APIRouter:
    """The subscriber: ``GET /dapr/subscribe`` and the ``swarm.tasks`` route."""
    r = APIRouter(tags=["pubsub"], dependencies=[Depends(_check_app_token)])
    # DaprApp only needs add_api_route, which a router has: the routes stay in this module
    dapr = DaprApp(r, router_tags=["pubsub"])  # type: ignore[arg-type]

    subscribe = dapr.subscribe(
        pubsub=settings.pubsub_name, topic=TASKS_TOPIC, route=ROUTE, dead_letter_topic=DEAD_TOPIC
    )
    subscribe(on_task)  # adds POST ROUTE and lists it at GET /dapr/subscribe
    r.add_api_route(DEAD_ROUTE, on_dead_letter, methods=["POST"])
    return r


async def on_task(request: Request, services: ServicesDep) -> TopicResponse:
    """Start a run from a ``swarm.tasks`` message (called by daprd, not by clients)."""
    settings, metrics = services.settings, services.metrics
    event: dict[str, Any] = {}
    try:
        try:
            raw = json.loads(await request.body())
        except ValueError as exc:
            raise MalformedMessage(f"body: not a CloudEvent ({exc})") from None
        if not isinstance(raw, dict):
            raise MalformedMessage("body: not a CloudEvent")
        event = raw
        body, run_id = parse_task(event)
        runs.build_input(body, run_id, services.specs)  # refuse before backpressure
        if services.tracker.in_flight >= settings.pubsub_max_in_flight:
            metrics.pubsub_tasks.labels("retry").inc()
            return TopicResponse(status="RETRY")
        # daprd (APP_API_TOKEN) is trusted like the operator: no per-user limits
        accepted = await runs.start_run(body, services, Response(), Caller.operator())
    except RequestError as exc:  # bad JSON, invalid body or spec, unknown swarm, id reused
        return await _dead(services, event, exc.code, exc.message, exc.field)
    except (DependencyUnavailable, grpc.RpcError) as exc:
        log.warning("swarm.tasks: sidecar not ready, message retried: %s", exc)
        metrics.pubsub_tasks.labels("retry").inc()
        return TopicResponse(status="RETRY")
    metrics.pubsub_tasks.labels("started" if accepted.created else "existing").inc()
    return TopicResponse(status="SUCCESS")


async def on_dead_letter(request: Request, metrics: MetricsDep) -> TopicResponse:
    """Count a ``swarm.tasks.dead`` message by its reason (called by daprd through the
    declarative subscription; once per message cluster-wide: one consumer group).
    Messages daprd dead-lettered itself carry no reason: ``forwarded_by_dapr``."""
    reason = "forwarded_by_dapr"
    try:
        event = json.loads(await request.body())
        data = event.get("data") if isinstance(event, dict) else None
        if isinstance(data, dict) and isinstance(data.get("reason"), str):
            reason = DeadLetter.model_validate(data).reason
    except (ValueError, ValidationError):
        pass
    metrics.pubsub_dead_letters.labels(reason).inc()
    return TopicResponse(status="SUCCESS")


async def _dead(
    services: Services, event: dict[str, Any], reason: str, message: str, field: str | None
) -> TopicResponse:
    """Publish a refused message to the dead-letter topic with its reason."""
    metrics = services.metrics
    letter = DeadLetter(
        reason=reason,
        message=message,
        field=field,
        cloudevent_id=event.get("id"),
        source=event.get("source"),
        data=event.get("data"),
    )
    event_id = f"dead-{event.get('id') or hashlib.sha256(message.encode()).hexdigest()[:16]}"
    metrics.pubsub_tasks.labels("dead").inc()
    log.warning("swarm.tasks: message %s dead-lettered: %s", event.get("id"), message)
    try:
        if services.outbox is None:
            raise DependencyUnavailable("pub/sub is not enabled (SWARMD_PUBSUB_ENABLED)")
        await services.outbox.publisher.publish(
            DEAD_TOPIC, letter.model_dump(), event_id=event_id, event_type="swarmd.task.dead"
        )
    except DependencyUnavailable:
        return TopicResponse(status="DROP")  # daprd forwards it to the dead-letter topic
    return TopicResponse(status="SUCCESS")
