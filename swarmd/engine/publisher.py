"""Publishing to a Dapr pub/sub topic through daprd's HTTP publish API.

``POST /v1.0/publish/{pubsub}/{topic}?metadata.cloudevent.id=...`` with a JSON
body: daprd wraps it in a CloudEvent whose ``id`` and ``type`` are ours, so a
consumer can deduplicate a republished event by its CloudEvent id (or by the
``run_id`` in its data). Many events to one topic go in one request through
daprd's bulk publish API (``POST /v1.0/publish/bulk/{pubsub}/{topic}``), each
entry with its own CloudEvent id and type: a 10,000-agent run publishes 10,000
progress events. One ``httpx`` client per event loop.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from swarmd.engine.loopclients import LoopClients
from swarmd.errors import DependencyUnavailable

#: topics of the event-driven API (a wire contract: producers and consumers name them)
TASKS_TOPIC = "swarm.tasks"
DEAD_TOPIC = "swarm.tasks.dead"
RESULTS_TOPIC = "swarm.results"
EVENTS_TOPIC = "swarm.events"


class Publisher:
    """Publishes JSON events to one pub/sub component of one daprd."""

    def __init__(self, http_port: int, pubsub: str, timeout_s: float = 10.0) -> None:
        name = quote(pubsub, safe="")
        self.base = f"http://127.0.0.1:{http_port}/v1.0/publish/{name}/"
        self.bulk_base = f"http://127.0.0.1:{http_port}/v1.0/publish/bulk/{name}/"
        self._clients = LoopClients(timeout_s)

    async def publish_many(self, topic: str, events: list[tuple[str, str, Any]]) -> set[str]:
        """Publish ``(event_id, event_type, data)`` events in one request; the ids daprd
        did not take (all of them when it cannot be reached)."""
        body = [
            {
                "entryId": event_id,
                "event": data,
                "contentType": "application/json",
                "metadata": {"cloudevent.id": event_id, "cloudevent.type": event_type},
            }
            for event_id, event_type, data in events
        ]
        ids = {e[0] for e in events}
        try:
            r = await self._clients.get().post(self.bulk_base + quote(topic, safe=""), json=body)
        except httpx.HTTPError:
            return ids
        if r.status_code < 300:
            return set()
        try:
            failed = {str(f.get("entryId")) for f in r.json().get("failedEntries") or []}
        except (ValueError, AttributeError):
            return ids
        return (failed & ids) or ids

    async def publish(self, topic: str, data: Any, *, event_id: str, event_type: str) -> None:
        """Publish ``data``; raises :class:`DependencyUnavailable` if daprd did not take it."""
        params = {"metadata.cloudevent.id": event_id, "metadata.cloudevent.type": event_type}
        try:
            r = await self._clients.get().post(
                self.base + quote(topic, safe=""), json=data, params=params
            )
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(
                f"publish to {topic!r}: sidecar unreachable: {exc}"
            ) from exc
        if r.status_code >= 300:
            raise DependencyUnavailable(f"publish to {topic!r}: {r.status_code} {r.text[:200]}")

    async def close(self) -> None:
        await self._clients.aclose()
