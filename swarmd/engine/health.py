"""Sidecar health: tell a dead or wedged daprd, and an app that lost its workflow
stream, from a healthy pair.

daprd answers three things over HTTP:

* ``/v1.0/healthz``: the whole runtime, actors and workflow engine included;
* ``/v1.0/healthz/outbound``: only that daprd can serve the app's calls;
* ``/v1.0/metadata`` ``workflows.connectedWorkers``: workflow workers
  (our app's ``WorkflowRuntime``) holding a work-item stream to it.

A daprd whose workflow engine or actor runtime died answers the second but
not the first (dapr/dapr#10337's symptom); an app whose worker lost its stream
leaves ``connectedWorkers`` at 0 while daprd itself is healthy. Both need a
restart of the process at fault: kubelet does it in the chart (daprd's own
liveness probe on ``/v1.0/healthz``, the app's on ``/livez``), the local
launcher does it in :meth:`swarmd.devstack.launcher.Stack.heal`.
"""

from __future__ import annotations

import time
from typing import Literal

import httpx
from pydantic import BaseModel

Diagnosis = Literal["ok", "daprd_down", "daprd_wedged", "no_worker"]


class SidecarHealth(BaseModel):
    healthz: bool
    outbound: bool
    workers: int | None = None

    @property
    def diagnosis(self) -> Diagnosis:
        if not self.outbound and not self.healthz:
            return "daprd_down"
        if not self.healthz:
            return "daprd_wedged"
        if self.workers == 0:
            return "no_worker"
        return "ok"


def probe(client: httpx.Client, dapr_http_port: int) -> SidecarHealth:
    """Ask daprd at ``127.0.0.1:<port>`` (each call bounded by the client's timeout;
    from async code, run it in a thread)."""
    base = f"http://127.0.0.1:{dapr_http_port}/v1.0"

    def ok(path: str) -> bool:
        try:
            return client.get(base + path).status_code < 300
        except httpx.HTTPError:
            return False

    healthz, outbound = ok("/healthz"), ok("/healthz/outbound")
    workers: int | None = None
    if outbound:
        try:
            r = client.get(base + "/metadata")
            if r.status_code < 300:
                workers = int((r.json().get("workflows") or {}).get("connectedWorkers") or 0)
        except (httpx.HTTPError, ValueError):
            workers = None
    return SidecarHealth(healthz=healthz, outbound=outbound, workers=workers)


class Persistent:
    """How long a diagnosis has held without interruption (a restart takes seconds
    to be healthy again: only a condition that lasts calls for action)."""

    def __init__(self) -> None:
        self.diagnosis: Diagnosis = "ok"
        self.since = time.monotonic()

    def see(self, d: Diagnosis) -> float:
        """Record ``d`` now; seconds it has held."""
        now = time.monotonic()
        if d != self.diagnosis:
            self.diagnosis, self.since = d, now
        return now - self.since
