"""One gRPC message limit for daprd and the app's workflow channels.

A 10,000-agent run's history is larger than gRPC's and daprd's 4 MiB defaults
(``bench.scatter_gather --sizes 10000`` is the end-to-end check); these pin the
wiring that gives both sides the same limit."""

from __future__ import annotations

from pathlib import Path

import yaml
from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow.aio import DaprWorkflowClient

from swarmd.compose.grpc_limits import raise_client_limit, raise_worker_limit
from swarmd.config import Settings
from swarmd.devstack.launcher import Stack


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
    want = {"grpc.max_receive_message_length": 64 << 20, "grpc.max_send_message_length": 64 << 20}
    rt = WorkflowRuntime(host="127.0.0.1", port="1")
    raise_worker_limit(rt, 64)
    assert dict(rt._WorkflowRuntime__worker._channel_options) == want  # type: ignore[attr-defined]
    client = DaprWorkflowClient(host="127.0.0.1", port="1")
    raise_client_limit(client, 64)
    inner = client._DaprWorkflowClient__obj  # type: ignore[attr-defined]
    assert dict(inner._channel_options) == want
