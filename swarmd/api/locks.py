"""``/v1/locks``: operators take, inspect and release distributed locks by hand.

For maintenance ("keep agents off this resource while I fix it") and for
checking the lock machinery end to end. A lock taken here belongs to this
process's owner incarnation, like every lock the engine takes: if the process
is killed, the watchdog releases it. It is not re-entrant and not renewed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, status
from pydantic import BaseModel, ConfigDict, Field

from swarmd.api.auth import require_operator
from swarmd.api.deps import LocksDep, ServicesDep, get_locks
from swarmd.api.openapi import errors
from swarmd.engine.jsontypes import JsonInt
from swarmd.engine.locks import MAX_TTL_S, RESOURCE_RE, Hold, check_resource
from swarmd.errors import LockBusy, LockNotHeld

router = APIRouter(prefix="/v1/locks", tags=["locks"], dependencies=[Depends(require_operator)])


#: the pattern is checked by check_resource (its error names the field ``resource``)
Resource = Annotated[
    str,
    Path(description="Lock resource id", json_schema_extra={"pattern": RESOURCE_RE.pattern}),
]


class TakeLock(BaseModel):
    """Body of ``POST /v1/locks/{resource}``."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types exactly as the schema
    ttl_s: JsonInt = Field(
        ge=1, le=MAX_TTL_S, description="Seconds until the lock expires by itself", examples=[30]
    )
    wait_s: float = Field(0.0, ge=0, le=60, description="Keep trying this long if it is held")
    busy_marker: bool = Field(
        False, description="Also write the state marker 'busy.lock.<resource>' while held"
    )


class LockView(BaseModel):
    resource: str
    store: str
    owner: str
    ttl_s: int
    taken_at: float
    expires_at: float
    marker: str | None
    lost: bool = Field(description="The owner lost its lease: the lock may be reclaimed")


class LockList(BaseModel):
    owner: str = Field(description="This process's owner incarnation (<pod>:<start id>)")
    locks: list[LockView]


def _view(h: Hold) -> LockView:
    d: dict[str, Any] = h.view()
    return LockView.model_validate(d)


@router.get("", response_model=LockList)
async def list_locks(locks: LocksDep) -> LockList:
    """Locks this process holds, and its owner id."""
    return LockList(owner=locks.owner, locks=[_view(h) for h in locks.held()])


@router.post(
    "/{resource}",
    status_code=status.HTTP_201_CREATED,
    response_model=LockView,
    responses=errors(_409="held by another owner (or already by this process)"),
)
async def take_lock(resource: Resource, body: TakeLock, services: ServicesDep) -> LockView:
    """Take the lock ``resource`` for this process; 409 ``lock_busy`` if it is held."""
    check_resource(resource)
    locks = get_locks(services)  # after validation: bad input is 4xx even without a sidecar
    marker = f"busy.lock.{resource}" if body.busy_marker else None
    try:
        hold = await locks.acquire(resource, body.ttl_s, wait_s=body.wait_s, marker=marker)
    except LockBusy as exc:
        exc.extra.setdefault("resource", resource)
        raise
    return _view(hold)


@router.get("/{resource}", response_model=LockView, responses=errors(404))
async def get_lock(resource: Resource, services: ServicesDep) -> LockView:
    """The lock if this process holds it (404 otherwise)."""
    check_resource(resource)
    locks = get_locks(services)
    hold = locks.get(resource)
    if hold is None:
        raise LockNotHeld(f"this process does not hold {resource!r}", field="resource")
    return _view(hold)


class LockReleased(BaseModel):
    resource: str
    owner: str
    released: bool = Field(description="False: it had expired (or been reclaimed) already")


@router.delete("/{resource}", response_model=LockReleased, responses=errors(404))
async def release_lock(resource: Resource, services: ServicesDep) -> dict[str, Any]:
    """Release a lock this process holds. ``released`` is false if it had already
    expired (or been reclaimed) before this call."""
    check_resource(resource)
    locks = get_locks(services)
    hold = locks.get(resource)
    if hold is None:
        raise LockNotHeld(f"this process does not hold {resource!r}", field="resource")
    released = await locks.release(hold)
    return {"resource": resource, "owner": hold.owner, "released": released}
