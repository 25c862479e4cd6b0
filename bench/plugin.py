"""Workflows for the engine-ceiling benchmark: scatter-gather with no-op agent steps.

Loaded with ``SWARMD_PLUGINS='["bench.plugin"]'``. Two shapes:

* ``bench.noop_fanout`` (engine v1's shape): each agent a child workflow running
  one activity that does nothing.
* ``bench.noop_swarm`` (engine v3; ``bench.noop_swarm_e2`` the same on engine v2):
  the real ``swarmd.scatter_gather`` workflow code — planner, agents in journaled
  groups, reducer — with the LLM call replaced by a no-op. Every agent's call
  still goes through the call journal (a state-store read and write), so the
  figure is the engine's own cost: Dapr workflow state, scheduling, gRPC and the
  journal, without any LLM.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, WorkflowActivityContext, when_all

from swarmd.activities.agents import AgentRunner, make_run_agents
from swarmd.compose.worker import Registrar, on_engine
from swarmd.engine.models import LLMRequest, LLMResult, SwarmInput, Usage
from swarmd.engine.spec import AgentSpec, Limits, SwarmSpec
from swarmd.workflows.scatter_gather import scatter_gather

FANOUT = "bench.noop_fanout"
AGENT = "bench.noop_agent"
STEP = "bench.noop_step"
SWARM = "bench.noop_swarm"
SWARM_E2 = "bench.noop_swarm_e2"
NOOP_LLM = "bench.noop_llm"
NOOP_AGENTS = "bench.noop_agents"


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


def _answer(req: LLMRequest) -> dict[str, Any]:
    return LLMResult(content=f"ok {req.agent}", model=req.model, usage=Usage(calls=1)).model_dump()


async def noop_llm(ctx: WorkflowActivityContext, req: Any) -> dict[str, Any]:
    return _answer(LLMRequest.model_validate(req))


async def _noop_model(req: LLMRequest, instance: str) -> dict[str, Any]:
    return _answer(req)


def noop_swarm(
    ctx: DaprWorkflowContext, inp: dict[str, Any], engine: int
) -> Generator[Any, Any, Any]:
    n = int(inp["agents"])
    spec = SwarmSpec(
        name="noop",
        pattern="scatter_gather",
        agents=[AgentSpec(name="noop", role="You do nothing.")],
        limits=Limits(max_parallel=min(n, 10_000)),
    )
    raw = SwarmInput(run_id=ctx.instance_id, task="noop", spec=spec, agents=n).model_dump()
    out = yield from scatter_gather(
        ctx, raw, engine, agents_activity=NOOP_AGENTS, llm_activity=NOOP_LLM
    )
    return {"agents": len(out["agent_results"]), "answer": out["answer"]}


def register(reg: Registrar) -> None:
    reg.workflow(FANOUT, [("v1", noop_fanout)])
    reg.workflow(AGENT, [("v1", noop_agent)])
    reg.activity(STEP, noop_step)
    reg.workflow(SWARM, [("v1", on_engine(noop_swarm, 2)), ("v2", on_engine(noop_swarm, 3))])
    reg.workflow(SWARM_E2, [("v1", on_engine(noop_swarm, 2))])
    reg.activity(NOOP_LLM, noop_llm)
    if reg.journal is None:
        raise RuntimeError("bench.plugin needs the process's call journal")
    reg.activity(NOOP_AGENTS, make_run_agents(AgentRunner(reg.journal, _noop_model)))
