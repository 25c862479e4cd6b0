"""Workflow statuses, grouped once for everyone who asks "has this run ended?"."""

from __future__ import annotations

from typing import Final

from dapr.ext.workflow import WorkflowStatus

#: a run in one of these has ended: it takes no steps, events or control actions
ENDED: Final = frozenset(
    {WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.TERMINATED}
)
#: started or about to start, not paused (STALLED: a version mismatch, it may resume)
ACTIVE: Final = frozenset({WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.STALLED})
PAUSED: Final = frozenset({WorkflowStatus.SUSPENDED})
