"""The gRPC options of the workflow channels between the app and daprd.

daprd hands the worker a workflow's whole history in one gRPC message, and the
API reads a run's output in one. gRPC's default cap is 4 MiB on the receiving
side, and daprd 1.18 stalls a workflow whose history passes 95% of its own
``--max-body-size`` (4 MiB by default). A 10,000-agent run's history is larger
than that, so both sides get :attr:`Settings.grpc_max_message_mib`.

``dapr-ext-workflow`` 1.18.3 (the newest on PyPI here) does not let a caller pass
gRPC channel options to ``WorkflowRuntime`` or the asyncio ``DaprWorkflowClient``; the
upstream fix (dapr/python-sdk#1085, ``max_grpc_message_length``) is not released
yet. Until it is, this module is the one place that sets the options on the
SDK's durabletask objects, before their channels are opened. Both calls fail loudly if
the SDK's shape changes, rather than silently keeping the 4 MiB cap.
"""

from __future__ import annotations

from typing import Any

from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow.aio import DaprWorkflowClient

#: gRPC's reconnect backoff grows to 120 s; while it waits, every call fails at once
#: with UNAVAILABLE. A daprd restart (seconds) then left the API answering 503 for as
#: long again after daprd was back. Capped, the channel looks again within a second.
RECONNECT_BACKOFF = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def channel_options(max_mib: int) -> list[tuple[str, int]]:
    """The options of both workflow channels: the message limit and the reconnect cap."""
    size = max_mib * 1024 * 1024
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        *RECONNECT_BACKOFF,
    ]


def raise_worker_limit(rt: WorkflowRuntime, max_mib: int) -> None:
    """Set the worker's channel options (its channel is opened by ``start``)."""
    worker: Any = getattr(rt, "_WorkflowRuntime__worker")  # noqa: B009
    if not hasattr(worker, "_channel_options"):
        raise RuntimeError("dapr-ext-workflow changed: TaskHubGrpcWorker has no channel options")
    worker._channel_options = channel_options(max_mib)


def raise_client_limit(client: DaprWorkflowClient, max_mib: int) -> None:
    """Set the (asyncio) client's channel options; it opens its channel on first use."""
    inner: Any = getattr(client, "_DaprWorkflowClient__obj", None)
    if getattr(inner, "_channel", "missing") is not None or not hasattr(inner, "_channel_options"):
        raise RuntimeError("dapr-ext-workflow changed: the client's channel options moved")
    inner._channel_options = channel_options(max_mib)
