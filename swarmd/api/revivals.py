"""``/v1/revivals``: what the run supervisor did to stuck runs (swarmd.engine.supervisor)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from swarmd.api.auth import require_operator
from swarmd.api.deps import SupervisorDep
from swarmd.engine.supervisor import Revival, Verdict

router = APIRouter(
    prefix="/v1/revivals", tags=["revivals"], dependencies=[Depends(require_operator)]
)


class SupervisorView(BaseModel):
    replica: str = Field(description="This replica's supervisor id")
    leading: bool = Field(description="Whether this replica led the last pass")
    last_pass: float | None = Field(description="When this replica last looked (Unix time)")
    stuck: list[Verdict] = Field(description="Runs this replica's last pass found stuck")


class RevivalList(BaseModel):
    revivals: list[Revival] = Field(description="Oldest first")
    supervisor: SupervisorView


@router.get("", response_model=RevivalList)
async def list_revivals(
    sup: SupervisorDep,
    run_id: Annotated[
        str | None, Query(max_length=200, description="Only this run's revivals")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> RevivalList:
    """Revivals of stuck runs, cluster-wide (run id, why, action, how long it was stuck,
    generation, outcome), and what this replica's supervisor last saw."""
    return RevivalList(
        revivals=await sup.recent(run_id, limit),
        supervisor=SupervisorView(
            replica=sup.owner,
            leading=sup.leading,
            last_pass=sup.last_pass,
            stuck=[v for v in sup.last_verdicts.values() if v.stuck],
        ),
    )
