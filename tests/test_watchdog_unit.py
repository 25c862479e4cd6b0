"""The lock API's input checks, process identity and the watchdog's settings; no stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from swarmd.api.app import create_app
from swarmd.config import Settings
from swarmd.engine.dapr import DaprClient
from swarmd.engine.locks import check_resource
from swarmd.engine.registry import (
    OwnerRegistry,
    new_owner_id,
    pid_namespace,
    pid_start_time,
    pid_state,
)
from swarmd.errors import ValidationFailed
from swarmd.watchdog.__main__ import main as watchdog_main
from swarmd.watchdog.service import find_pids, process_alive
from swarmd.watchdog.settings import WatchdogSettings

TOKEN = "test-token"


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(api_token=SecretStr(TOKEN))
    with TestClient(create_app(settings, start_engine=False)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c


def test_lock_api_needs_the_token(client: TestClient) -> None:
    del client.headers["Authorization"]
    assert client.post("/v1/locks/a", json={"ttl_s": 5}).status_code == 401
    assert client.get("/v1/locks").status_code == 401


@pytest.mark.parametrize(
    ("resource", "body", "field"),
    [
        ("ok", {}, "ttl_s"),
        ("ok", {"ttl_s": 0}, "ttl_s"),
        ("ok", {"ttl_s": 5, "wait_s": -1}, "wait_s"),
        ("ok", {"ttl_s": 5, "colour": "red"}, "colour"),
        ("a||b", {"ttl_s": 5}, "resource"),
        ("-leading-dash", {"ttl_s": 5}, "resource"),
    ],
)
def test_bad_lock_requests_are_422_naming_the_field_even_without_a_sidecar(
    client: TestClient, resource: str, body: dict[str, object], field: str
) -> None:
    r = client.post(f"/v1/locks/{resource}", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_valid_lock_request_without_a_sidecar_is_503(client: TestClient) -> None:
    r = client.post("/v1/locks/fine", json={"ttl_s": 5})
    assert r.status_code == 503 and r.json()["error"]["code"] == "dependency_unavailable"


def test_resource_ids_never_contain_daprs_key_separator() -> None:
    assert check_resource("turn.user-42") == "turn.user-42"
    for bad in ("", "a||b", "x" * 201, "sp ace", "a/b"):
        with pytest.raises(ValidationFailed):
            check_resource(bad)


def test_owner_ids_are_per_incarnation() -> None:
    a, b = new_owner_id("pod-1"), new_owner_id("pod-1")
    assert a != b and a.startswith("pod-1:") and b.startswith("pod-1:")


def test_registry_refuses_a_ttl_without_room_for_heartbeats() -> None:
    sc = DaprClient(1, "statestore")
    with pytest.raises(ValueError, match="TTL"):
        OwnerRegistry(sc, pod="p", heartbeat_s=1.0, ttl_s=2)
    OwnerRegistry(sc, pod="p", heartbeat_s=0.5, ttl_s=3)


def test_process_identity_detects_exit_zombies_and_pid_reuse() -> None:
    me = os.getpid()
    assert pid_start_time(me) is not None and pid_namespace() is not None
    assert process_alive(me, pid_start_time(me))
    assert not process_alive(me, (pid_start_time(me) or 0) + 1)  # same pid, other process

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = pid_start_time(child.pid)
        assert process_alive(child.pid, start)
        os.kill(child.pid, signal.SIGKILL)
        # not reaped yet: a zombie, which is dead for the watchdog
        deadline = time.monotonic() + 10
        while pid_state(child.pid) != "Z":
            assert time.monotonic() < deadline, "child never became a zombie"
            time.sleep(0.01)
        assert not process_alive(child.pid, start)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid, start)


def test_find_pids_matches_the_command_line() -> None:
    # The child says so once it runs: right after fork, before exec, /proc still
    # shows the parent's command line (this raced and failed in CI).
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; print('up', flush=True); time.sleep(60)",
            "marker-xyz",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        assert child.pid in find_pids("marker-xyz")
    finally:
        child.kill()
        child.wait()


def test_watchdog_settings_defaults_match_the_chart(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("SWARMD_WATCHDOG_") or k in ("POD_NAME", "DAPR_HTTP_PORT"):
            monkeypatch.delenv(k)
    s = WatchdogSettings()
    assert (s.port, s.app_cmdline, s.host, s.dapr_http_port) == (
        8081,
        "swarmd serve",
        "0.0.0.0",
        3500,
    )
    monkeypatch.setenv("POD_NAME", "swarmd-abc")
    assert WatchdogSettings().pod_name == "swarmd-abc"
    monkeypatch.setenv("SWARMD_WATCHDOG_SWEEP_INTERVAL_S", "0")
    with pytest.raises(ValidationError):
        WatchdogSettings()


def test_watchdog_names_a_bad_setting_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWARMD_WATCHDOG_PORT", "99999")
    assert watchdog_main([]) == 2
    assert "SWARMD_WATCHDOG_PORT" in capsys.readouterr().err
