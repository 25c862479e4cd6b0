"""One gRPC message limit for daprd and the app's workflow channels.

A 10,000-agent run's history is larger than gRPC's and daprd's 4 MiB defaults
(``bench.scatter_gather --sizes 10000`` is the end-to-end check); these pin the
wiring that gives both sides the same limit."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import grpc
import pytest
import yaml
from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow.aio import DaprWorkflowClient

from swarmd.api.deps import read_state
from swarmd.compose.grpc_limits import RECONNECT_BACKOFF, raise_client_limit, raise_worker_limit
from swarmd.config import Settings
from swarmd.devstack.launcher import Stack
from swarmd.errors import DependencyUnavailable


def _body_size(cmd: list[str]) -> str:
    return cmd[cmd.index("--max-body-size") + 1]


def test_daprd_gets_the_apps_limit(tmp_path: Path) -> None:
    default = Stack(data_dir=tmp_path / "a", app_mode="direct")
    assert _body_size(default.daprd_command()) == f"{Settings().grpc_max_message_mib}Mi"
    big = Stack(data_dir=tmp_path / "b", app_env={"SWARMD_GRPC_MAX_MESSAGE_MIB": "64"})
    assert _body_size(big.daprd_command()) == "64Mi"
    run_file = yaml.safe_load(big.render_run_file().read_text())
    assert run_file["apps"][0]["maxBodySize"] == "64Mi"
    assert run_file["apps"][0]["env"]["SWARMD_GRPC_MAX_MESSAGE_MIB"] == "64"


def test_the_workflow_channels_get_the_limit() -> None:
    want = {
        "grpc.max_receive_message_length": 64 << 20,
        "grpc.max_send_message_length": 64 << 20,
        **dict(RECONNECT_BACKOFF),
    }
    rt = WorkflowRuntime(host="127.0.0.1", port="1")
    raise_worker_limit(rt, 64)
    assert dict(rt._WorkflowRuntime__worker._channel_options) == want  # type: ignore[attr-defined]
    client = DaprWorkflowClient(host="127.0.0.1", port="1")
    raise_client_limit(client, 64)
    inner = client._DaprWorkflowClient__obj  # type: ignore[attr-defined]
    assert dict(inner._channel_options) == want


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_read_reaches_a_sidecar_that_came_back() -> None:
    """The API's reads fail while daprd is down and reach it again once it is back:
    the CI failure this pins was a 503 polled just after a daprd restart, while the
    channel's reconnect backoff (gRPC's default grows past the restart's seconds)
    still refused every call. A bare gRPC server stands in for the returned daprd:
    reaching it answers UNIMPLEMENTED, not "failed to connect"."""
    port = _unused_port()
    client = DaprWorkflowClient(host="127.0.0.1", port=str(port))
    raise_client_limit(client, 4)
    # down for 10 s, polled: gRPC's default backoff would next look only at ~16 s,
    # past the read's own retries after the server is back
    down_until = time.monotonic() + 10
    while time.monotonic() < down_until:
        with pytest.raises(DependencyUnavailable, match="failed to connect"):
            await read_state(client, "run-1")
    server = grpc.aio.server()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        with pytest.raises(DependencyUnavailable) as err:
            await read_state(client, "run-1")
        assert "UNIMPLEMENTED" in str(err.value), err.value
    finally:
        await server.stop(None)
