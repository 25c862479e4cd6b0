"""Build the Dapr workflow runtime with every workflow and activity registered.

Called from the entrypoint (``swarmd serve``) with clients it created; nothing
here runs at import time.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from dapr.ext.workflow import WorkflowRuntime
from dapr.ext.workflow.logger import LoggerOptions

from swarmd.activities.llm import make_call_llm
from swarmd.activities.reduce import make_reduce_chunks
from swarmd.activities.tools import ToolDeps, make_call_tool
from swarmd.config import Settings
from swarmd.engine import names
from swarmd.engine.payloads import PayloadStore
from swarmd.engine.state import StateStore
from swarmd.logs import JsonFormatter
from swarmd.workflows.agent_loop import agent_loop
from swarmd.workflows.debate import debate
from swarmd.workflows.pipeline import pipeline
from swarmd.workflows.scatter_gather import scatter_gather
from swarmd.workflows.supervisor import supervisor

#: registration name -> workflow function (the wire contract, see names.py)
WORKFLOWS: dict[str, Callable[..., Any]] = {
    names.SCATTER_GATHER: scatter_gather,
    names.SUPERVISOR: supervisor,
    names.DEBATE: debate,
    names.PIPELINE: pipeline,
    names.AGENT_LOOP: agent_loop,
}


def _fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A new function object per registration (the SDK marks functions it registered)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    functools.update_wrapper(wrapper, fn, updated=())
    return wrapper


def sdk_logger_options(settings: Settings) -> LoggerOptions:
    """The SDK logs every orchestration step at INFO; keep it at our SDK level, in our format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter())
    return LoggerOptions(log_level=settings.sdk_log_level, log_handler=handler)


def build_runtime(
    settings: Settings, llm_client: Any, tool_deps: ToolDeps, state: StateStore
) -> WorkflowRuntime:
    rt = WorkflowRuntime(
        logger_options=sdk_logger_options(settings),
        host="127.0.0.1",
        port=str(settings.dapr_grpc_port),
        maximum_concurrent_activity_work_items=settings.max_concurrent_activities,
        maximum_concurrent_orchestration_work_items=settings.max_concurrent_activities,
        worker_ready_timeout=60.0,
    )
    for name, wf in WORKFLOWS.items():
        rt.register_workflow(_fresh(wf), name=name)
    payloads = PayloadStore(state, settings.payload_ref_bytes)
    rt.register_activity(make_call_llm(llm_client, payloads), name=names.CALL_LLM)
    rt.register_activity(make_reduce_chunks(llm_client, state, payloads), name=names.REDUCE_CHUNKS)
    rt.register_activity(make_call_tool(tool_deps), name=names.CALL_TOOL)
    return rt
