"""``swarmd.agent_loop``: one agent as a durable loop (a child workflow).

Each turn is an LLM-call activity; if the model asks for tools, each tool call
is an activity too, and their results go back to the model on the next turn.
The loop ends when the model answers without tool calls or at ``max_turns``.
Every completed step is in the workflow history, so a crash resumes at the
step that was in flight and never pays again for a finished LLM call.

Deterministic: no clocks, randomness, I/O or logging here.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext, when_all
from dapr.ext.workflow._durabletask.task import TaskFailedError

from swarmd.engine import names
from swarmd.engine.models import (
    AgentInput,
    AgentOutput,
    LLMRequest,
    LLMResult,
    ToolRequest,
    Usage,
)
from swarmd.engine.retry import call_activity
from swarmd.errors import GuardrailBlocked

GUARDRAIL_BLOCKED = GuardrailBlocked.__name__


class Conversation:
    """An agent loop's state between model turns, shared by this workflow and by the
    in-activity loop of the user agent's v2 turn (``swarmd.agents.turn``): the
    messages so far, usage, the last answer. Pure and deterministic."""

    def __init__(self, inp: AgentInput) -> None:
        self.inp = inp
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": inp.role_prompt},
            {"role": "user", "content": inp.task},
        ]
        self.tool_specs = [tool_schema(t) for t in inp.tools] or None
        self.usage = Usage()
        self.last = ""

    def request(self) -> LLMRequest:
        inp = self.inp
        return LLMRequest(
            run_id=inp.run_id,
            agent=inp.agent,
            model=inp.model,
            messages=self.messages,
            tools=self.tool_specs,
            user=inp.user,
            trace=inp.trace,
            offload_above=inp.offload_above,
        )

    def failed(self, turn: int, error: str, blocked: bool = False) -> AgentOutput:
        """``blocked``: a gateway guardrail refused the call (``error`` says which, why)."""
        return AgentOutput.failed(
            self.inp.agent, error, content=self.last, turns=turn, usage=self.usage, blocked=blocked
        )

    def answered(self, turn: int, res: LLMResult) -> AgentOutput | None:
        """Take the model's answer: the agent's output if it called no tools, else None
        (its tool calls are in the conversation; run :meth:`tool_inputs` next)."""
        self.usage = self.usage.add(res.usage)
        self.last = res.content or self.last
        if not res.tool_calls:
            return AgentOutput(
                agent=self.inp.agent,
                status="answered",
                content=res.content or "",
                turns=turn,
                usage=self.usage,
                content_chars=res.content_chars,
            )
        self.messages.append(
            {
                "role": "assistant",
                "content": res.content,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in res.tool_calls
                ],
            }
        )
        return None

    def tool_inputs(self, res: LLMResult) -> list[dict[str, Any]]:
        """The ``swarmd.call_tool`` input of each tool call of ``res``."""
        inp = self.inp
        return [
            ToolRequest(
                run_id=inp.run_id,
                agent=inp.agent,
                name=c.name,
                arguments=c.arguments,
                allowed=inp.tools,
                user=inp.user,
                trace=inp.trace,  # the run's, for the tool's span
            ).model_dump(exclude_none=True)
            for c in res.tool_calls
        ]

    def tool_results(self, res: LLMResult, outputs: list[Any]) -> None:
        for c, out in zip(res.tool_calls, outputs, strict=True):
            self.messages.append({"role": "tool", "tool_call_id": c.id, "content": json.dumps(out)})

    def out_of_turns(self) -> AgentOutput:
        return AgentOutput(
            agent=self.inp.agent,
            status="max_turns",
            content=self.last,
            turns=self.inp.max_turns,
            usage=self.usage,
        )


def agent_loop(
    ctx: DaprWorkflowContext, raw: dict[str, Any]
) -> Generator[Any, Any, dict[str, Any]]:
    inp = AgentInput.model_validate(raw)
    conv = Conversation(inp)
    for turn in range(1, inp.max_turns + 1):
        try:
            raw_res = yield from call_activity(
                ctx, names.CALL_LLM, conv.request(), inp.retry, key=f"llm/{turn}"
            )
        except TaskFailedError as err:
            blocked = err.details.error_type == GUARDRAIL_BLOCKED  # no new step: replay-safe
            return conv.failed(turn, err.details.message, blocked).model_dump()
        res = LLMResult.model_validate(raw_res)
        out = conv.answered(turn, res)
        if out is not None:
            return out.model_dump()
        outputs = yield when_all(
            [ctx.call_activity(names.CALL_TOOL, input=t) for t in conv.tool_inputs(res)]
        )
        conv.tool_results(res, outputs)
    return conv.out_of_turns().model_dump()


def tool_schema(name: str) -> dict[str, Any]:
    """OpenAI function-tool declaration for a registered tool (by name)."""
    from swarmd.activities.tools import TOOL_SCHEMAS

    return {"type": "function", "function": TOOL_SCHEMAS[name]}
