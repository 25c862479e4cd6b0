"""The workflow worker: every workflow version and activity, registered by name.

This is where a new workflow version or a new activity is added:

* a changed workflow ships as a NEW version appended to its list in
  :data:`WORKFLOWS` (docs/upgrades.md); the old one stays until no run in
  flight uses it;
* a new activity gets a name in :mod:`swarmd.engine.names` and one
  ``reg.activity(...)`` line in :func:`build_worker`.

Plugins (``SWARMD_PLUGINS=pkg.module,...``) get the same :class:`Registrar`
through their ``register(reg)``. Called from :mod:`swarmd.compose.services` with
clients it created; nothing here runs at import time.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from dapr.ext.workflow import WorkflowActivityContext, WorkflowRuntime
from dapr.ext.workflow.logger import LoggerOptions
from openai import AsyncOpenAI
from pydantic import BaseModel

from swarmd.activities.agents import AgentRunner, gateway_model, make_run_agents
from swarmd.activities.llm import (
    LLMObserver,
    complete,
    make_call_llm,
    past_gateway_outages,
    traced_tool,
)
from swarmd.activities.reduce import ReduceRequest, make_reduce_chunks
from swarmd.activities.tools import ToolDeps, make_call_tool
from swarmd.agents.activities import make_activities as make_user_agent_activities
from swarmd.agents.config import Baseline, Template
from swarmd.agents.store import UserStore
from swarmd.agents.turn import Answers, Turns
from swarmd.compose.grpc_limits import raise_worker_limit
from swarmd.config import Settings
from swarmd.engine import names
from swarmd.engine.gate import RunGate
from swarmd.engine.journal import Journal
from swarmd.engine.live import LiveProgress
from swarmd.engine.models import AgentGroup, LLMRequest, LLMResult, ToolRequest
from swarmd.engine.payloads import PayloadStore
from swarmd.engine.pulse import Pulse
from swarmd.engine.runkeys import RunKeys
from swarmd.engine.state import StateStore
from swarmd.logs import JsonFormatter
from swarmd.telemetry import traced_agent_loop
from swarmd.workflows.agent_loop import agent_loop
from swarmd.workflows.debate import debate
from swarmd.workflows.pipeline import pipeline
from swarmd.workflows.scatter_gather import scatter_gather
from swarmd.workflows.supervisor import supervisor
from swarmd.workflows.user_agent import user_agent, user_agent_v2, user_agent_v3

Workflow = Callable[..., Any]


#: registration name -> its versions, oldest first; the last one is what new runs get.
#: A run records the version it started on and keeps replaying with that version's
#: code, so a changed workflow ships as a NEW version appended here while the old
#: one stays registered until no run in flight uses it (see docs/upgrades.md).
def on_engine(fn: Workflow, engine: int) -> Workflow:
    """A pattern workflow on engine ``engine`` (2: agents in journaled groups; 3: the
    same in larger groups; see ``Run``)."""

    def workflow(ctx: Any, raw: Any) -> Any:
        return fn(ctx, raw, engine)

    functools.update_wrapper(workflow, fn)
    return workflow


def pattern_versions(fn: Workflow) -> list[tuple[str, Workflow]]:
    """A pattern workflow's versions: v1 (a child workflow per agent), v2 and v3."""
    return [("v1", fn), ("v2", on_engine(fn, 2)), ("v3", on_engine(fn, 3))]


WORKFLOWS: dict[str, list[tuple[str, Workflow]]] = {
    names.SCATTER_GATHER: pattern_versions(scatter_gather),
    names.SUPERVISOR: pattern_versions(supervisor),
    names.DEBATE: pattern_versions(debate),
    names.PIPELINE: pattern_versions(pipeline),
    names.AGENT_LOOP: [("v1", agent_loop)],
    names.USER_AGENT: [("v1", user_agent), ("v2", user_agent_v2), ("v3", user_agent_v3)],
}


class Registrar:
    """What a plugin module's ``register(reg)`` gets: add workflows and activities
    under explicit, stable names (``SWARMD_PLUGINS=pkg.module,...``)."""

    def __init__(
        self,
        rt: WorkflowRuntime,
        wrap: Callable[[Callable[..., Any]], Any] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.rt = rt
        #: applied to every activity (the run pulses of swarmd.engine.pulse)
        self.wrap = wrap or (lambda fn: fn)
        #: the process's call journal, for plugins whose activities journal their calls
        self.journal = journal

    def workflow(self, name: str, versions: Sequence[tuple[str, Workflow]]) -> None:
        """Register ``versions`` (oldest first, the last is the latest) under ``name``."""
        if not versions:
            raise ValueError(f"workflow {name!r}: no versions")
        for i, (version, fn) in enumerate(versions):
            self.rt.register_versioned_workflow(
                _fresh(fn), name=name, version_name=version, is_latest=i == len(versions) - 1
            )

    def unversioned_workflow(self, name: str, fn: Workflow) -> None:
        """A workflow without versions: changing it breaks runs in flight. Avoid."""
        self.rt.register_workflow(_fresh(fn), name=name)

    def activity(
        self, name: str, fn: Callable[..., Any], input: type[BaseModel] | None = None
    ) -> None:
        """Register the activity ``fn(ctx, inp)`` under ``name``.

        With ``input``, the wire JSON is validated into that model before ``fn`` sees
        it (a pydantic ``ValidationError``: never retried, names the field), and a
        model ``fn`` returns is dumped to JSON with the fields that were set
        (``exclude_unset``); a dict it returns travels as it is. Without ``input``,
        ``fn`` gets the raw JSON."""
        if input is None:
            self.rt.register_activity(self.wrap(_fresh(fn)), name=name)
            return
        model = input

        async def typed(ctx: WorkflowActivityContext, raw: Any) -> Any:
            out = await fn(ctx, model.model_validate(raw))
            if isinstance(out, BaseModel):
                return out.model_dump(mode="json", exclude_unset=True)
            return out

        functools.update_wrapper(typed, fn, updated=())
        self.rt.register_activity(self.wrap(typed), name=name)


def latest_last(
    versions: Sequence[tuple[str, Workflow]], latest: str
) -> list[tuple[str, Workflow]]:
    """``versions`` reordered so that ``latest`` is registered as the latest one."""
    if latest not in {v for v, _ in versions}:
        raise ValueError(f"no workflow version {latest!r} (have {[v for v, _ in versions]})")
    return [*(x for x in versions if x[0] != latest), *(x for x in versions if x[0] == latest)]


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


def user_turns(
    settings: Settings,
    llm_client: AsyncOpenAI,
    state: StateStore,
    agent_config: tuple[Baseline, dict[str, Template]],
    obs: LLMObserver,
    call_tool: Callable[[WorkflowActivityContext, dict[str, Any]], Awaitable[dict[str, Any]]],
    answers: Answers,
) -> Turns:
    """The user agents' turns around one event loop's LLM client: the worker's (its
    activities) or the API's (the v3 fast path)."""

    async def user_llm(ctx: WorkflowActivityContext, req: LLMRequest) -> LLMResult:
        async def once() -> dict[str, Any]:
            return (await complete(llm_client, req, None, obs, ctx.workflow_id)).model_dump()

        # a gateway restart is waited out, not a failed message (chaos: 14 lost)
        return LLMResult.model_validate(await past_gateway_outages(once))

    baseline, templates = agent_config
    return Turns(
        state, baseline, templates, user_llm, call_tool, settings.user_agent_lease_s, answers
    )


def fast_path_turns(
    settings: Settings,
    llm_client: AsyncOpenAI,
    tool_deps: ToolDeps,
    state: StateStore,
    agent_config: tuple[Baseline, dict[str, Template]],
    obs: LLMObserver,
    answers: Answers,
) -> Turns:
    """The turns the v3 fast path runs on the API's event loop (its own LLM client)."""
    call_tool = traced_tool(make_call_tool(tool_deps), obs)
    return user_turns(settings, llm_client, state, agent_config, obs, call_tool, answers)


def build_worker(
    settings: Settings,
    llm_client: AsyncOpenAI,
    tool_deps: ToolDeps,
    state: StateStore,
    users: UserStore,
    agent_config: tuple[Baseline, dict[str, Template]],
    obs: LLMObserver,
    answers: Answers,
    pulse: Pulse | None = None,
) -> WorkflowRuntime:
    """The workflow runtime with every workflow in :data:`WORKFLOWS`, every activity
    and every plugin registered (not started)."""
    rt = WorkflowRuntime(
        logger_options=sdk_logger_options(settings),
        host="127.0.0.1",
        port=str(settings.dapr_grpc_port),
        maximum_concurrent_activity_work_items=settings.max_concurrent_activities,
        maximum_concurrent_orchestration_work_items=settings.max_concurrent_activities,
        worker_ready_timeout=60.0,
    )
    raise_worker_limit(rt, settings.grpc_max_message_mib)
    sidecar = state.dapr  # the process's one Dapr client
    journal = Journal(state, RunKeys(sidecar), settings.journal_retention_s)
    reg = Registrar(rt, pulse.wrap if pulse is not None else None, journal)
    for name, versions in WORKFLOWS.items():
        if name == names.AGENT_LOOP:  # records each agent's span when its loop returns
            versions = [(v, traced_agent_loop(fn, obs.tracer)) for v, fn in versions]
        if name == names.USER_AGENT:  # the operator's pick is what new generations get
            versions = latest_last(versions, settings.user_agent_version)
        if name in names.PATTERNS.values():  # likewise the engine new runs start on
            versions = latest_last(versions, f"v{settings.engine_version}")
        reg.workflow(name, versions)
    payloads = PayloadStore(sidecar, settings.payload_ref_bytes, settings.payload_ttl_s)
    guardrails = settings.user_input_guardrails
    reg.activity(
        names.CALL_LLM,
        make_call_llm(llm_client, payloads, obs, journal, guardrails),
        LLMRequest,
    )
    live = LiveProgress(sidecar, RunKeys(sidecar))
    model = gateway_model(llm_client, payloads, obs, guardrails, settings.llm_max_in_flight)
    gate = RunGate(sidecar.workflow_status)
    runner = AgentRunner(
        journal, model, tool_deps, obs, live, gate, max_agents=settings.agents_max_in_flight
    )
    reg.activity(names.RUN_AGENTS, make_run_agents(runner), AgentGroup)
    reduce_chunks = make_reduce_chunks(
        llm_client, sidecar, journal, settings.llm_max_in_flight, payloads, obs
    )
    reg.activity(names.REDUCE_CHUNKS, reduce_chunks, ReduceRequest)
    call_tool = traced_tool(make_call_tool(tool_deps), obs)
    reg.activity(names.CALL_TOOL, call_tool, ToolRequest)
    baseline, templates = agent_config
    for name, fn in make_user_agent_activities(users, baseline, templates).items():
        reg.activity(name, fn)  # v1's, for generations started before the upgrade

    turns = user_turns(settings, llm_client, state, agent_config, obs, call_tool, answers)
    for name, fn in turns.activities.items():
        reg.activity(name, fn)  # v2's turn, v3's sweep
    for module in settings.plugins:
        importlib.import_module(module).register(reg)
    return rt
