"""Plugin for the upgrade test: the workflow code of 'deploy A'.

``test.upgrade`` is registered with versions (v1); ``test.upgrade-unversioned``
without, as a control. Both call an LLM activity, wait for a ``go`` event,
then call it again.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext

from swarmd.compose.worker import Registrar
from swarmd.engine import names
from swarmd.engine.models import LLMRequest

VERSIONED = "test.upgrade"
UNVERSIONED = "test.upgrade-unversioned"


def llm(ctx: DaprWorkflowContext, text: str) -> Any:
    return ctx.call_activity(
        names.CALL_LLM,
        input=LLMRequest(
            run_id=ctx.instance_id,
            agent="upgrade",
            model="swarmd-fast",
            messages=[{"role": "user", "content": f"{text} ({ctx.instance_id})"}],
        ),
    )


def v1(ctx: DaprWorkflowContext, inp: Any) -> Generator[Any, Any, dict[str, Any]]:
    one = yield llm(ctx, "upgrade step one")
    ctx.set_custom_status('{"phase": "waiting-for-go"}')
    yield ctx.wait_for_external_event("go")
    two = yield llm(ctx, "upgrade step two")
    return {"version": "v1", "answers": [one["content"], two["content"]]}


def register(reg: Registrar) -> None:
    reg.workflow(VERSIONED, [("v1", v1)])
    reg.unversioned_workflow(UNVERSIONED, v1)
