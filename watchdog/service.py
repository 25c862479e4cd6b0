"""The watchdog process: watch the app's processes, sweep the registry, serve health.

Three loops on one event loop:

* **pids** (every ``pid_poll_s``): each owner of *this pod* whose heartbeat
  names a pid in our pid namespace (Kubernetes: ``shareProcessNamespace``;
  locally: the host's) is watched by pid and start time. When that process is
  gone or a zombie, the owner is reaped at once, without waiting for its TTL.
  A restarted app is a new owner with a new pid, picked up from the index.
* **index** (every ``index_poll_s``): new owners of this pod; and, when
  ``app_cmdline`` is set, app processes appearing or exiting trigger a poll.
* **sweep** (every ``sweep_interval_s``): every owner in the cluster whose
  heartbeat expired is reaped, so a pod lost with its watchdog is covered by
  the watchdogs of other pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from swarmd.engine.dapr import DaprClient
from swarmd.engine.registry import (
    IndexEntry,
    hb_key,
    pid_namespace,
    pid_start_time,
    pid_state,
    pod_name,
    read_index,
)
from swarmd.errors import DependencyUnavailable
from swarmd.watchdog.reaper import HEARTBEAT_EXPIRED, PROCESS_EXITED, Metrics, Reaper
from swarmd.watchdog.settings import WatchdogSettings

log = logging.getLogger("swarmd.watchdog")


@dataclass
class Watched:
    owner: str
    pid: int
    pid_start: int | None


def process_alive(pid: int, start: int | None) -> bool:
    """Alive: exists, is not a zombie, and (when known) started when the owner said."""
    state = pid_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    return start is None or pid_start_time(pid) == start


def find_pids(substring: str) -> set[int]:
    """Pids whose command line contains ``substring`` (arguments joined by spaces)."""
    out: set[int] = set()
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            raw = open(f"/proc/{name}/cmdline", "rb").read()  # noqa: SIM115
        except OSError:
            continue
        if substring in raw.replace(b"\0", b" ").decode(errors="replace"):
            out.add(int(name))
    return out


class Watchdog:
    def __init__(self, settings: WatchdogSettings) -> None:
        self.s = settings
        self.pod = settings.pod_name or pod_name()
        self.id = f"watchdog:{self.pod}"
        self.pid_ns = pid_namespace()
        self.sc = DaprClient(settings.dapr_http_port, settings.state_store)
        self.metrics = Metrics()
        self.reaper = Reaper(self.sc, self.id, self.metrics, settings.claim_ttl_s)
        self.watched: dict[str, Watched] = {}
        self.app_pids: set[int] = set()
        self.last_seen_beat: dict[str, float] = {}
        self.started_at = time.time()
        self.last_tick = time.monotonic()
        self.last_sweep: float | None = None
        self.sidecar_ok = False
        self._poke = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- reaping ---------------------------------------------------------------------
    def _spawn_reap(self, owner: str, reason: str, died_at: float) -> None:
        async def go() -> None:
            try:
                await self.reaper.reap(owner, reason, died_at)
            except DependencyUnavailable as exc:
                self.metrics.errors.labels("reap").inc()
                log.warning("reap failed; will retry", extra={"owner": owner, "error": str(exc)})
            except Exception:
                self.metrics.errors.labels("reap").inc()
                log.exception("reap failed; will retry", extra={"owner": owner})
            else:
                self.watched.pop(owner, None)

        t = asyncio.create_task(go())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- loops -----------------------------------------------------------------------
    async def check_pids(self) -> None:
        for w in list(self.watched.values()):
            if not process_alive(w.pid, w.pid_start):
                log.warning(
                    "app process exited",
                    extra={"owner": w.owner, "pid": w.pid, "pod": self.pod},
                )
                self._spawn_reap(w.owner, PROCESS_EXITED, time.time())
        self.metrics.watched.set(len(self.watched))

    def _watchable(self, entry: IndexEntry) -> bool:
        return (
            entry.pod == self.pod
            and entry.pid is not None
            and entry.pid_ns is not None
            and entry.pid_ns == self.pid_ns
        )

    async def poll_index(self) -> None:
        index = await read_index(self.sc)
        self.sidecar_ok = True
        self.metrics.owners.set(len(index.owners))
        for owner, entry in index.owners.items():
            if owner in self.watched or not self._watchable(entry):
                continue
            assert entry.pid is not None
            if process_alive(entry.pid, entry.pid_start):
                self.watched[owner] = Watched(owner, entry.pid, entry.pid_start)
                log.info("watching app process", extra={"owner": owner, "pid": entry.pid})
            else:  # died before we saw it (or while this watchdog was down)
                self._spawn_reap(owner, PROCESS_EXITED, time.time())
        for owner in list(self.watched):
            if owner not in index.owners:
                self.watched.pop(owner, None)  # deregistered cleanly, or reaped elsewhere

    def scan_app_processes(self) -> None:
        if not self.s.app_cmdline:
            return
        pids = find_pids(self.s.app_cmdline)
        if self.s.app_pid is not None and process_alive(self.s.app_pid, None):
            pids.add(self.s.app_pid)
        if pids != self.app_pids:
            for pid in pids - self.app_pids:
                log.info("app process appeared", extra={"pid": pid})
            for pid in self.app_pids - pids:
                log.info("app process gone", extra={"pid": pid})
            self.app_pids = pids
            self._poke.set()  # look at the index now

    async def sweep(self) -> None:
        index = await read_index(self.sc)
        now = time.time()
        for owner in index.owners:
            item = await self.sc.get(hb_key(owner))
            hb = item.value if isinstance(item.value, dict) else None
            if hb is not None and not hb.get("fenced_by"):
                self.last_seen_beat[owner] = float(hb.get("at", now))
                continue
            # expired (or fenced by a watchdog that did not finish): estimate the death
            died = self.last_seen_beat.pop(owner, None) or now
            self._spawn_reap(owner, HEARTBEAT_EXPIRED, died)
        for owner in list(self.last_seen_beat):
            if owner not in index.owners:
                del self.last_seen_beat[owner]
        self.metrics.sweeps.inc()
        self.last_sweep = time.time()

    async def run_loops(self) -> None:
        next_index = next_sweep = 0.0
        while True:
            now = time.monotonic()
            self.last_tick = now
            try:
                await self.check_pids()
                if self._poke.is_set() or now >= next_index:
                    self._poke.clear()
                    await self.poll_index()
                    self.scan_app_processes()
                    next_index = now + self.s.index_poll_s
                if now >= next_sweep:
                    await self.sweep()
                    next_sweep = now + self.s.sweep_interval_s
            except DependencyUnavailable as exc:
                self.sidecar_ok = False
                self.metrics.errors.labels("poll").inc()
                log.warning("sidecar call failed", extra={"error": str(exc)})
                await asyncio.sleep(0.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=self.s.pid_poll_s)

    # -- HTTP --------------------------------------------------------------------------
    def http_app(self) -> Starlette:
        async def healthz(_: Request) -> JSONResponse:
            stale = time.monotonic() - self.last_tick
            ok = stale < max(10.0, 20 * self.s.pid_poll_s)
            body = {
                "status": "ok" if ok else "stuck",
                "watchdog": self.id,
                "sidecar": self.sidecar_ok,
                "watched": sorted(self.watched),
                "last_sweep": self.last_sweep,
            }
            return JSONResponse(body, status_code=200 if ok else 503)

        async def metrics(_: Request) -> Response:
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        async def reclaims(_: Request) -> JSONResponse:
            return JSONResponse({"watchdog": self.id, "reclaims": list(self.reaper.recent)})

        return Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/metrics", metrics),
                Route("/v1/reclaims", reclaims),
            ]
        )

    async def serve(self) -> None:
        log.info(
            "watchdog starting",
            extra={
                "watchdog": self.id,
                "pod": self.pod,
                "namespace": self.s.pod_namespace,
                "port": self.s.port,
                "dapr_http_port": self.s.dapr_http_port,
                "sweep_interval_s": self.s.sweep_interval_s,
            },
        )
        config = uvicorn.Config(
            self.http_app(), host=self.s.host, port=self.s.port, log_config=None, access_log=False
        )
        server = uvicorn.Server(config)
        loops = asyncio.create_task(self.run_loops())
        try:
            await server.serve()
        finally:
            loops.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loops
            for t in list(self._tasks):
                t.cancel()
            await self.sc.close()
