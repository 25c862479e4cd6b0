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
    Usage,
)
from swarmd.engine.retry import call_activity


def agent_loop(
    ctx: DaprWorkflowContext, raw: dict[str, Any]
) -> Generator[Any, Any, dict[str, Any]]:
    inp = AgentInput.model_validate(raw)
    retry = inp.retry
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": inp.role_prompt},
        {"role": "user", "content": inp.task},
    ]
    tool_specs = [tool_schema(t) for t in inp.tools] or None
    usage = Usage()
    last = ""
    for turn in range(1, inp.max_turns + 1):
        req = LLMRequest(
            run_id=inp.run_id,
            agent=inp.agent,
            model=inp.model,
            messages=messages,
            tools=tool_specs,
            user=inp.user,
            trace=inp.trace,
            offload_above=inp.offload_above,
        )
        try:
            raw_res = yield from call_activity(ctx, names.CALL_LLM, req, retry, key=f"llm/{turn}")
        except TaskFailedError as err:
            return AgentOutput(
                agent=inp.agent,
                status="failed",
                content=last,
                turns=turn,
                usage=usage,
                error=err.details.message,
            ).model_dump()
        res = LLMResult.model_validate(raw_res)
        usage = usage.add(res.usage)
        last = res.content or last
        if not res.tool_calls:
            return AgentOutput(
                agent=inp.agent,
                status="answered",
                content=res.content or "",
                turns=turn,
                usage=usage,
                content_chars=res.content_chars,
            ).model_dump()
        messages.append(
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
        outputs = yield when_all(
            [
                ctx.call_activity(
                    names.CALL_TOOL,
                    input={
                        "run_id": inp.run_id,
                        "agent": inp.agent,
                        "name": c.name,
                        "arguments": c.arguments,
                        "allowed": inp.tools,
                        "user": inp.user,
                        # the run's trace, for the tool's span (taken off before the tool)
                        **({"trace": inp.trace} if inp.trace else {}),
                    },
                )
                for c in res.tool_calls
            ]
        )
        for c, out in zip(res.tool_calls, outputs, strict=True):
            messages.append({"role": "tool", "tool_call_id": c.id, "content": json.dumps(out)})
    return AgentOutput(
        agent=inp.agent, status="max_turns", content=last, turns=inp.max_turns, usage=usage
    ).model_dump()


def tool_schema(name: str) -> dict[str, Any]:
    """OpenAI function-tool declaration for a registered tool (by name)."""
    from swarmd.activities.tools import TOOL_SCHEMAS

    return {"type": "function", "function": TOOL_SCHEMAS[name]}
