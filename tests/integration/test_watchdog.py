"""The watchdog on the real stack (daprd, Redis lock store, the app, the watchdog).

The app takes locks through ``/v1/locks`` (its owner is its incarnation id),
gets SIGKILLed, and the watchdog beside it releases exactly what it held. A
"contender" takes the same lock straight through daprd's lock API, as another
process would, which is how each test sees when a lock is free again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from swarmd.devstack.launcher import Stack, port_free
from swarmd.engine.dapr import DaprClient
from swarmd.engine.registry import (
    Claim,
    Holdings,
    IndexEntry,
    LockRef,
    OwnerIndex,
    claim_key,
    hb_key,
    holds_key,
    read_index,
    reaped_key,
    update_index,
)
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.integration
LOCKSTORE = "lockstore"


# -- helpers ----------------------------------------------------------------------------
def dapr(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.dapr_url, timeout=10)


def try_lock(stack: Stack, resource: str, owner: str, ttl_s: int = 30) -> bool:
    with dapr(stack) as d:
        r = d.post(
            f"/v1.0-alpha1/lock/{LOCKSTORE}",
            json={"resourceId": resource, "lockOwner": owner, "expiryInSeconds": ttl_s},
        )
    assert r.status_code == 200, r.text
    return bool(r.json()["success"])


def unlock(stack: Stack, resource: str, owner: str) -> int:
    with dapr(stack) as d:
        r = d.post(
            f"/v1.0-alpha1/unlock/{LOCKSTORE}", json={"resourceId": resource, "lockOwner": owner}
        )
    assert r.status_code == 200, r.text
    return int(r.json().get("status", 0))


def state_get(stack: Stack, key: str) -> Any:
    with dapr(stack) as d:
        r = d.get(f"/v1.0/state/statestore/{key}")
    assert r.status_code in (200, 204), r.text
    return r.json() if r.content else None


def wait_free(stack: Stack, resource: str, since: float, limit_s: float) -> float:
    """Poll as a contender until ``resource`` can be taken; seconds after ``since``.
    The contender releases it again at once."""
    contender = f"contender-{os.getpid()}-{time.monotonic_ns()}"
    while True:
        if try_lock(stack, resource, contender, ttl_s=5):
            took = time.monotonic() - since
            assert unlock(stack, resource, contender) == 0
            return took
        assert time.monotonic() - since < limit_s, f"{resource} still held after {limit_s}s"
        time.sleep(0.01)


def take(api: httpx.Client, resource: str, ttl_s: int = 60, **kw: Any) -> dict[str, Any]:
    r = api.post(f"/v1/locks/{resource}", json={"ttl_s": ttl_s, **kw})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def reclaims(url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = httpx.get(f"{url}/v1/reclaims", timeout=5).json()["reclaims"]
    return out


def alive(stack: Stack, name: str) -> bool:
    p = stack.procs.get(name)
    return p is not None and p.popen.poll() is None


@pytest.fixture
def healthy(stack: Stack) -> Iterator[Stack]:
    """The session stack with app and watchdog up, before and after the test."""
    for name, restart in (("app", stack.restart_app), ("watchdog", stack.restart_watchdog)):
        if not alive(stack, name):
            restart()
    yield stack
    for name, restart in (("app", stack.restart_app), ("watchdog", stack.restart_watchdog)):
        if not alive(stack, name):
            restart()


@dataclass
class OtherPod:
    """A watchdog of another pod (its own POD_NAME): it can only sweep."""

    url: str
    popen: subprocess.Popen[bytes]


@contextlib.contextmanager
def other_pod_watchdogs(
    stack: Stack, n: int, sweep_interval_s: float, tmp: Path
) -> Iterator[list[OtherPod]]:
    pods: list[OtherPod] = []
    try:
        for i in range(n):
            port = stack.ports.watchdog + 10 + i
            assert port_free(port), f"port {port} taken"
            env = {
                **os.environ,
                **stack.watchdog_environment(),
                "POD_NAME": f"other-pod-{i}",
                "SWARMD_WATCHDOG_PORT": str(port),
                "SWARMD_WATCHDOG_SWEEP_INTERVAL_S": str(sweep_interval_s),
            }
            env.pop("SWARMD_WATCHDOG_APP_PID", None)
            log = (tmp / f"other-pod-{i}.log").open("ab")
            popen = subprocess.Popen(
                [sys.executable, "-m", "swarmd.watchdog"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            pod = OtherPod(f"http://127.0.0.1:{port}", popen)
            pods.append(pod)

            def up(pod: OtherPod = pod) -> bool:
                assert pod.popen.poll() is None, "other-pod watchdog exited"
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(f"{pod.url}/healthz", timeout=2).is_success
                return False

            wait_until(up, timeout_s=60, what=f"other-pod watchdog {i}")
        yield pods
    finally:
        for pod in pods:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.popen.pid, signal.SIGTERM)
            pod.popen.wait(timeout=20)


# -- tests ------------------------------------------------------------------------------
def test_killed_app_locks_released_within_2s_and_a_fresh_app_takes_them(
    healthy: Stack, api: httpx.Client
) -> None:
    stack = healthy
    before = metric(stack.watchdog_url, "swarmd_watchdog_locks_reclaimed_total")
    held = [take(api, f"kill-{i}", ttl_s=60) for i in range(3)]
    marked = take(api, "kill-marked", ttl_s=60, busy_marker=True)
    owner = marked["owner"]
    assert {h["owner"] for h in held} == {owner}
    assert state_get(stack, "busy.lock.kill-marked")["owner"] == owner
    assert not try_lock(stack, "kill-0", "contender")  # really held

    t0 = time.monotonic()
    stack.kill("app")
    took = wait_free(stack, "kill-0", t0, limit_s=30)
    print(f"\nwatchdog: kill -> lock free for a contender: {took * 1000:.0f} ms (lock TTL 60 s)")
    # the watchdog released it, not the TTL: long before the 60 s a dead owner's lock
    # would hold out (how fast it is, is bench.watchdog_reclaim's business)
    assert took < 15.0, f"released {took:.2f}s after SIGKILL"
    for r in ("kill-1", "kill-2", "kill-marked"):
        assert wait_free(stack, r, t0, limit_s=15.0) < 15.0
    assert state_get(stack, "busy.lock.kill-marked") is None  # orphaned marker deleted

    rec = next(r for r in reclaims(stack.watchdog_url) if r["owner"] == owner)
    assert rec["reason"] == "process_exited"
    assert sorted(rec["released"]) == sorted(
        f"lockstore/{r}" for r in ("kill-0", "kill-1", "kill-2", "kill-marked")
    )
    assert rec["markers_deleted"] == ["busy.lock.kill-marked"]
    assert metric(stack.watchdog_url, "swarmd_watchdog_locks_reclaimed_total") == before + 4
    assert state_get(stack, reaped_key(owner))["by"] == rec["by"]

    stack.restart_app()
    again = take(api, "kill-0", ttl_s=60)
    assert again["owner"] != owner and again["owner"].split(":")[0] == owner.split(":")[0]
    assert api.delete("/v1/locks/kill-0").json()["released"] is True


def test_control_without_the_watchdog_the_lock_stays_until_its_ttl(
    healthy: Stack, api: httpx.Client
) -> None:
    stack = healthy
    ttl = 5
    stack.kill("watchdog", signal.SIGTERM)
    t_take = time.monotonic()
    take(api, "control-0", ttl_s=ttl)
    t0 = time.monotonic()
    stack.kill("app")
    took = wait_free(stack, "control-0", t0, limit_s=ttl + 10)
    since_take = took + (t0 - t_take)
    print(
        f"\ncontrol (no watchdog): kill -> lock free: {took * 1000:.0f} ms; "
        f"taken -> free {since_take:.2f} s (TTL {ttl} s)"
    )
    assert since_take >= ttl - 0.5, "released before its TTL without a watchdog"
    assert since_take < ttl + 2.0


def test_live_owner_keeps_its_locks_through_repeated_sweeps(
    healthy: Stack, api: httpx.Client, tmp_path: Path
) -> None:
    stack = healthy
    hold = take(api, "live-0", ttl_s=120, busy_marker=True)
    with other_pod_watchdogs(stack, 2, sweep_interval_s=0.1, tmp=tmp_path) as pods:
        start = [metric(p.url, "swarmd_watchdog_sweeps_total") for p in pods]
        local = metric(stack.watchdog_url, "swarmd_watchdog_sweeps_total")
        wait_until(
            lambda: (
                all(
                    metric(p.url, "swarmd_watchdog_sweeps_total") >= s + 20
                    for p, s in zip(pods, start, strict=True)
                )
                and metric(stack.watchdog_url, "swarmd_watchdog_sweeps_total") >= local + 2
            ),
            timeout_s=60,
            what="20 sweeps by each other-pod watchdog",
        )
        for p in pods:
            assert not [r for r in reclaims(p.url) if r["owner"] == hold["owner"]]
            assert not [r for r in reclaims(p.url) if "lockstore/live-0" in r["released"]]
    assert not try_lock(stack, "live-0", "contender")
    view = api.get("/v1/locks/live-0").json()
    assert view["owner"] == hold["owner"] and view["lost"] is False
    assert state_get(stack, "busy.lock.live-0")["owner"] == hold["owner"]
    assert not [r for r in reclaims(stack.watchdog_url) if r["owner"] == hold["owner"]]
    assert api.delete("/v1/locks/live-0").json()["released"] is True
    assert state_get(stack, "busy.lock.live-0") is None


def test_restart_racing_sweeps_loses_nothing_and_double_releases_nothing(
    healthy: Stack, api: httpx.Client, tmp_path: Path
) -> None:
    """The pod's own watchdog is down; two other pods' watchdogs sweep every 50 ms
    while the app is killed and restarted at once: the restarted app (a new owner)
    takes new locks and waits for the old ones, while both sweepers race to reap
    the old owner when its heartbeat expires."""
    stack = healthy
    old = [take(api, f"race-{i}", ttl_s=60) for i in range(3)]
    old_owner = old[0]["owner"]
    stack.kill("watchdog", signal.SIGTERM)
    with other_pod_watchdogs(stack, 2, sweep_interval_s=0.05, tmp=tmp_path) as pods:
        t0 = time.monotonic()
        stack.kill("app")
        stack.restart_app()
        new = take(api, "race-new", ttl_s=60)
        assert new["owner"] != old_owner
        # the new incarnation waits for the old owner's locks to be reclaimed
        got = take(api, "race-0", ttl_s=60, wait_s=20)
        print(
            f"\nrace: kill -> restarted app took race-0 after {time.monotonic() - t0:.2f} s "
            "(old owner reaped by a sweep of another pod)"
        )
        for r in ("race-1", "race-2"):
            wait_free(stack, r, t0, limit_s=30)

        records = [r for p in pods for r in reclaims(p.url) if r["owner"] == old_owner]
        assert len(records) == 1, records  # one watchdog reaped it, the other skipped
        assert records[0]["reason"] == "heartbeat_expired"
        assert sorted(records[0]["released"]) == [f"lockstore/race-{i}" for i in range(3)]
        # the metric agrees: no lock counted twice (other owners a sweep met count too)
        total = sum(metric(p.url, "swarmd_watchdog_locks_reclaimed_total") for p in pods)
        assert total == sum(len(r["released"]) for p in pods for r in reclaims(p.url))
        # the new owner lost nothing: its locks are held and not marked lost
        for r in ("race-new", "race-0"):
            assert not try_lock(stack, r, "contender")
        views = api.get("/v1/locks").json()
        assert views["owner"] == new["owner"] == got["owner"]
        assert sorted(v["resource"] for v in views["locks"]) == ["race-0", "race-new"]
        assert not any(v["lost"] for v in views["locks"])
        assert not any(r["owner"] == new["owner"] for p in pods for r in reclaims(p.url))
    hb = state_get(stack, hb_key(old_owner))
    assert hb["fenced_by"] == records[0]["by"]
    index = asyncio.run(_index(stack))
    assert old_owner not in index.owners and new["owner"] in index.owners
    for r in ("race-new", "race-0"):
        assert api.delete(f"/v1/locks/{r}").json()["released"] is True


def test_watchdog_killed_and_restarted_reclaims_an_owner_that_died_meanwhile(
    healthy: Stack, api: httpx.Client
) -> None:
    stack = healthy
    held = take(api, "wd-down-0", ttl_s=60)
    stack.kill("watchdog")  # SIGKILL
    stack.kill("app")
    assert not try_lock(stack, "wd-down-0", "contender")  # nobody reclaims it now
    t_restart = time.monotonic()
    stack.restart_watchdog()
    took = wait_free(stack, "wd-down-0", t_restart, limit_s=10)
    print(f"\nwatchdog restarted -> dead owner's lock free after {took * 1000:.0f} ms (TTL 60 s)")
    rec = next(r for r in reclaims(stack.watchdog_url) if r["owner"] == held["owner"])
    assert list(rec["released"]) == ["lockstore/wd-down-0"]
    assert rec["reason"] == "process_exited"  # found by pid at start-up, before its TTL


def test_restarted_watchdog_finishes_a_reap_it_had_claimed(healthy: Stack) -> None:
    """A reap interrupted by a SIGKILL of the watchdog (claim written, locks not yet
    released) is finished by the same pod's watchdog after its restart, before
    the claim's TTL."""
    stack = healthy
    dead = f"{stack.pod_name}:deadbeef{time.monotonic_ns() % 10**8:08d}"
    wd_id = f"watchdog:{stack.pod_name}"
    resources = ["resume-0", "resume-1"]
    for r in resources:
        assert try_lock(stack, r, dead, ttl_s=120)

    async def setup() -> None:
        sc = DaprClient(stack.ports.dapr_http, "statestore")
        holds = Holdings(owner=dead, pod=stack.pod_name)
        for r in resources:
            ref = LockRef(store=LOCKSTORE, resource=r, expiry_s=120)
            holds.locks[ref.ref] = ref
        await sc.save(holds_key(dead), holds.model_dump(mode="json"))
        claim = Claim(by=wd_id, reason="heartbeat_expired")
        await sc.save(claim_key(dead), claim.model_dump(mode="json"), ttl_s=600)

        def add(index: OwnerIndex) -> bool:
            index.owners[dead] = IndexEntry(pod=stack.pod_name)
            return True

        await update_index(sc, add)
        await sc.close()

    stack.kill("watchdog")
    asyncio.run(setup())
    t0 = time.monotonic()
    stack.restart_watchdog()
    for r in resources:
        wait_free(stack, r, t0, limit_s=15)
    rec = next(r for r in reclaims(stack.watchdog_url) if r["owner"] == dead)
    assert sorted(rec["released"]) == [f"lockstore/{r}" for r in resources]
    assert state_get(stack, claim_key(dead)) is None
    assert dead not in asyncio.run(_index(stack)).owners


async def _index(stack: Stack) -> OwnerIndex:
    sc = DaprClient(stack.ports.dapr_http, "statestore")
    try:
        return await read_index(sc)
    finally:
        await sc.close()
