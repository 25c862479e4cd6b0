"""Workflows for the engine-ceiling benchmark: scatter-gather with no-op agent steps.

Same shape as a real scatter-gather (each agent a child workflow running one
activity) but the activity does nothing, so the figure is the engine's own
cost: Dapr workflow state, scheduling and gRPC, without any LLM.
Loaded with ``SWARMD_PLUGINS='["bench.plugin"]'``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, WorkflowActivityContext, when_all

from swarmd.compose.worker import Registrar

FANOUT = "bench.noop_fanout"
AGENT = "bench.noop_agent"
STEP = "bench.noop_step"


async def noop_step(ctx: WorkflowActivityContext, inp: Any) -> dict[str, Any]:
    return {"agent": inp, "content": "ok"}


def noop_agent(ctx: DaprWorkflowContext, inp: Any) -> Generator[Any, Any, Any]:
    return (yield ctx.call_activity(STEP, input=inp))


def noop_fanout(ctx: DaprWorkflowContext, inp: dict[str, Any]) -> Generator[Any, Any, Any]:
    n = int(inp["agents"])
    plan = yield ctx.call_activity(STEP, input="planner")
    results = yield when_all(
        [
            ctx.call_child_workflow(AGENT, input=f"agent-{i}", instance_id=f"{ctx.instance_id}.{i}")
            for i in range(n)
        ]
    )
    final = yield ctx.call_activity(STEP, input="reducer")
    return {"agents": len(results), "plan": plan["content"], "final": final["content"]}


def register(reg: Registrar) -> None:
    reg.workflow(FANOUT, [("v1", noop_fanout)])
    reg.workflow(AGENT, [("v1", noop_agent)])
    reg.activity(STEP, noop_step)
