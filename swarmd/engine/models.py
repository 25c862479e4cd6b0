"""Typed inputs and outputs that cross the workflow/activity boundary.

They travel through Dapr's workflow history as JSON, so every field is plain
data and every model tolerates being re-validated from a dict.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from swarmd.engine.spec import SwarmSpec


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    #: what the gateway reported the calls cost (x-litellm-response-cost); 0 when it reports none
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
            cost_usd=round(self.cost_usd + other.cost_usd, 9),
        )


class ToolCall(_Model):
    id: str
    name: str
    arguments: str


class LLMRequest(_Model):
    """Input of the ``swarmd.call_llm`` activity."""

    run_id: str
    agent: str
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    user: str | None = None
    max_tokens: int | None = None
    #: W3C traceparent of the run's span (swarmd.telemetry); None for runs without one
    trace: str | None = None
    #: answers above this many bytes go to the state store and travel as references
    #: (the run's history budget per agent; the global threshold applies too)
    offload_above: int | None = Field(None, ge=256)
    #: the workflow reads the answer itself (a plan it splits, a choice it parses): the
    #: answer travels inline whatever its size, never as a payload reference
    inline: bool = False
    #: the call's key in the run's journal (swarmd.engine.journal); None on engine v1
    call_key: str | None = None


class LLMResult(_Model):
    content: str | None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    model: str
    usage: Usage
    #: length of the real answer, also when ``content`` is a reference to it
    content_chars: int | None = None


class RetrySpec(_Model):
    """Engine-owned retry policy for activities (exponential backoff, full jitter)."""

    max_attempts: int = Field(6, ge=1)
    first_interval_s: float = Field(1.0, gt=0)
    backoff: float = Field(2.0, ge=1)
    max_interval_s: float = Field(30.0, gt=0)


class AgentInput(_Model):
    """Input of the ``swarmd.agent_loop`` child workflow."""

    run_id: str
    agent: str
    role_prompt: str
    task: str
    model: str
    tools: list[str] = Field(default_factory=list)
    max_turns: int = Field(4, ge=1, le=50)
    user: str | None = None
    retry: RetrySpec = Field(default_factory=lambda: RetrySpec())
    #: W3C traceparent of the run's span (swarmd.telemetry)
    trace: str | None = None
    #: see ``LLMRequest.offload_above``
    offload_above: int | None = Field(None, ge=256)


class AgentSetup(_Model):
    """What every agent of a group shares: role, model, tools and turn limit."""

    role_prompt: str
    model: str
    tools: list[str] = Field(default_factory=list)
    max_turns: int = Field(4, ge=1, le=50)


class AgentJob(_Model):
    """One agent of a group: its label, the step key its calls are journaled under,
    its task, and which of the group's setups it uses."""

    agent: str
    key: str
    task: str
    setup: int = 0


class AgentGroup(_Model):
    """Input of the ``swarmd.run_agents`` activity (engine v2): up to G agents run
    concurrently in one activity, each call journaled, so a crash mid-group resumes
    at the call. Limits travel with the group so it stops starting agents in time."""

    run_id: str
    setups: list[AgentSetup]
    jobs: list[AgentJob]
    #: calls in flight at once inside this group
    concurrency: int = Field(ge=1)
    user: str | None = None
    retry: RetrySpec = Field(default_factory=lambda: RetrySpec())
    trace: str | None = None
    offload_above: int | None = Field(None, ge=256)
    #: tokens the run may still spend; the group starts no agent once they are spent
    tokens_left: int | None = None
    #: ISO time after which the group starts no new agent (the run's deadline)
    deadline: str | None = None


class ToolRequest(_Model):
    """Input of the ``swarmd.call_tool`` activity: one tool call an agent's model asked
    for. ``allowed`` is the agent's tool list (the tool refuses any other); ``trace`` is
    the run's traceparent, for the tool's span."""

    run_id: str
    agent: str
    name: str
    arguments: str
    allowed: list[str]
    user: str | None = None
    trace: str | None = None


class AgentOutput(_Model):
    agent: str
    #: ``blocked``: a gateway guardrail refused one of its calls (``error`` says which, why)
    status: Literal["answered", "max_turns", "failed", "blocked"]
    content: str
    turns: int
    usage: Usage
    error: str | None = None
    #: length of the real answer, also when ``content`` is a reference to it
    content_chars: int | None = None

    @classmethod
    def failed(
        cls,
        agent: str,
        error: str,
        *,
        content: str = "",
        turns: int = 0,
        usage: Usage | None = None,
        blocked: bool = False,
    ) -> AgentOutput:
        """The output of an agent that did not answer: ``error`` says why; ``content``,
        ``turns`` and ``usage`` are what it had when it stopped (nothing, by default).
        ``blocked``: a gateway guardrail refused one of its calls."""
        return cls(
            agent=agent,
            status="blocked" if blocked else "failed",
            content=content,
            turns=turns,
            usage=usage if usage is not None else Usage(),
            error=error,
        )

    @property
    def usable(self) -> bool:
        """Its content is an answer (not the leftovers of a failed or blocked agent)."""
        return self.status in ("answered", "max_turns")

    @property
    def size(self) -> int:
        return self.content_chars if self.content_chars is not None else len(self.content)


class GroupResult(_Model):
    """Output of ``swarmd.run_agents``: the outputs of the agents that ran, in job
    order; agents not started (a limit was reached) are left out."""

    outputs: list[AgentOutput]
    #: why agents were left unstarted: "token_budget" or "deadline" ("terminated": the
    #: workflow was terminated under the group, and nobody reads this result)
    stopped: str | None = None


class SwarmInput(_Model):
    """Input of every pattern workflow: the spec travels with the run, so a later
    change to the spec files never changes a run in flight."""

    run_id: str
    task: str = Field(min_length=1, max_length=100_000)
    spec: SwarmSpec
    agents: int | None = Field(
        None, ge=1, le=10_000, description="scatter_gather: how many agents to fan out to"
    )
    user: str | None = Field(None, max_length=200)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    #: W3C traceparent of the run's span, set by the API (swarmd.telemetry); not part of
    #: what makes two start requests the same
    trace: str | None = Field(None, max_length=128)


class RunOutput(_Model):
    swarm: str
    pattern: str
    answer: str
    agent_results: list[AgentOutput]
    usage: Usage
    failed_agents: int = 0
    rounds: int = 0
    #: why the run stopped early: "token_budget" or "deadline"; None when it finished
    stop_reason: str | None = None
    #: set when the spec has an approval gate: what the approver said
    approved: bool | None = None


class Progress(_Model):
    """What a running workflow publishes as its custom status."""

    phase: str
    agents_done: int = 0
    agents_total: int = 0
    round: int = 0
    usage: Usage = Field(default_factory=Usage)
