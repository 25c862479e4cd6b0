"""Plugin for the upgrade test: the workflow code of 'deploy B'.

v2 inserts a new first step (a preflight LLM call): replaying a v1 history
with v2's code would not match, which is exactly the change that breaks
unversioned workflows in flight.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext

from swarmd.compose.worker import Registrar
from tests.plugins.upgrade_v1 import UNVERSIONED, VERSIONED, llm, v1


def v2(ctx: DaprWorkflowContext, inp: Any) -> Generator[Any, Any, dict[str, Any]]:
    pre = yield llm(ctx, "upgrade preflight")
    one = yield llm(ctx, "upgrade step one")
    ctx.set_custom_status('{"phase": "waiting-for-go"}')
    yield ctx.wait_for_external_event("go")
    two = yield llm(ctx, "upgrade step two")
    return {"version": "v2", "answers": [pre["content"], one["content"], two["content"]]}


def register(reg: Registrar) -> None:
    reg.workflow(VERSIONED, [("v1", v1), ("v2", v2)])
    reg.unversioned_workflow(UNVERSIONED, v2)
