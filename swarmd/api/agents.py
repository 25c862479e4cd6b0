"""``/v1/agents``: one long-lived agent per user behind one front door.

Provisioning starts the user's ``swarmd.user_agent`` workflow (instance
``user-agent-<user_id>``); a message goes into the user's inbox in the state
store and wakes the workflow, which answers messages strictly in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any, Literal

import grpc
from dapr.ext.workflow.aio import DaprWorkflowClient
from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from swarmd.agents import notify
from swarmd.agents.config import (
    NAME_RE,
    Baseline,
    Preferences,
    Profile,
    Skill,
    Template,
    check_customisation,
    check_user_id,
    effective,
)
from swarmd.agents.fastpath import accept, still_watched
from swarmd.agents.lease import Lease
from swarmd.agents.store import (
    UserStore,
    instance_id,
    key,
    now_iso,
    parse_message_id,
    today,
    turn_instance_id,
)
from swarmd.api.auth import CallerDep, OwnedUser, OwnerScopeDep, authenticate, not_found_agent
from swarmd.api.deps import (
    AgentCatalogDep,
    PageCursor,
    PageLimit,
    ServicesDep,
    SettingsDep,
    get_users,
    get_waker,
    get_wf_client,
    read_state,
)
from swarmd.api.openapi import errors
from swarmd.engine import names
from swarmd.engine.catalog import AgentQuery, decode_cursor
from swarmd.engine.status import ENDED
from swarmd.errors import (
    AgentNotFound,
    DependencyUnavailable,
    NotFound,
    RunConflict,
    TooManyRequests,
    ValidationFailed,
)
from swarmd.identity.limits import turns_in_flight

router = APIRouter(prefix="/v1/agents", tags=["agents"], dependencies=[Depends(authenticate)])

FINAL = frozenset({"answered", "failed", "budget_exhausted"})
#: a long-polling GET re-reads the message at least this often (a reply stored by
#: another replica is not notified in this process)
WAIT_POLL_S = 2.0


class Provision(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types exactly as the schema
    user_id: str = Field(
        pattern=NAME_RE, description="1-64 letters, digits, _ or -", examples=["alice"]
    )
    template: str = Field(max_length=64, examples=["analyst"])


#: a skill's name, as a key of ``skills`` (the schema's ``propertyNames``)
SkillName = Annotated[str, StringConstraints(pattern=NAME_RE)]


def _named_skills_only(schema: dict[str, Any]) -> None:
    """pydantic draws a constrained key as ``patternProperties``, which lets any other
    key through; the API refuses those, so the schema does too."""
    for option in schema["properties"]["skills"].get("anyOf", []):
        if option.get("type") == "object":
            option["additionalProperties"] = False


class Customise(BaseModel):
    """PATCH body: preferences replace the stored ones field by field; a skill set to
    null is removed."""

    model_config = ConfigDict(  # JSON types exactly as the schema
        extra="forbid", strict=True, json_schema_extra=_named_skills_only
    )
    preferences: Preferences | None = None
    skills: dict[SkillName, Skill | None] | None = None


class NewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types exactly as the schema
    text: str = Field(min_length=1, max_length=100_000, examples=["Summarise the incidents"])
    skill: str | None = Field(None, pattern=NAME_RE, description="run with a named skill")


class NewSchedule(BaseModel):
    """Exactly one of ``every_s`` and ``daily_at``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "oneOf": [
                {"required": ["every_s"], "properties": {"every_s": {"type": "number"}}},
                {"required": ["daily_at"], "properties": {"daily_at": {"type": "string"}}},
            ]
        },
    )
    prompt: str = Field(min_length=1, max_length=10_000, examples=["check X and tell me"])
    every_s: float | None = Field(None, ge=1, le=366 * 86400, description="fire every N seconds")
    daily_at: str | None = Field(
        None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="fire daily at HH:MM (UTC)"
    )


class Ctx:
    """What a handler needs: the user store, baseline, templates and workflow client.
    503 before the worker is connected to its sidecar."""

    def __init__(self, services: ServicesDep) -> None:
        self.store: UserStore = get_users(services)
        self.baseline: Baseline = services.agent_baseline
        self.templates: dict[str, Template] = services.agent_templates
        self.services = services

    @property
    def client(self) -> DaprWorkflowClient:
        return get_wf_client(self.services)

    async def profile(self, user: str) -> Profile:
        check_user_id(user)
        raw = await self.store.get(user, "profile")
        if raw is None:
            raise not_found_agent(user)
        return Profile.model_validate(raw)

    async def wake(self, user: str) -> None:
        """Wake the user's workflow; a wake the sidecar refused is retried in the
        background (:class:`swarmd.agents.wake.Waker`), never lost with a 5xx."""
        await get_waker(self.services).wake(user)


CtxDep = Annotated[Ctx, Depends(Ctx)]


async def _state(client: DaprWorkflowClient, iid: str, payloads: bool = False) -> Any:
    """The workflow's state (``payloads``: with its custom status, i.e. the phase)."""
    return await read_state(client, iid, payloads=payloads)


async def _ensure_workflow(c: Ctx, user: str) -> None:
    st = await _state(c.client, instance_id(user))
    if st is not None and st.runtime_status not in ENDED:
        return
    if st is not None:
        await c.client.purge_workflow(instance_id(user), recursive=True)
    seq = int(await c.store.get(user, "seq") or 0)
    done = seq  # messages before a restart stay answered or are re-run from the first open one
    for i in range(1, seq + 1):
        m = await c.store.get(user, "msg", i)
        if m is not None and m["status"] not in FINAL:
            done = i - 1
            break
    with contextlib.suppress(grpc.RpcError):  # lost a race with a concurrent start
        await c.client.schedule_new_workflow(
            names.USER_AGENT, input={"user": user, "done": done}, instance_id=instance_id(user)
        )


def _view(c: Ctx, p: Profile, wf: Any, usage: dict[str, Any] | None) -> dict[str, Any]:
    t = c.templates.get(p.template)
    custom = None
    if wf is not None and wf.serialized_custom_status:
        with contextlib.suppress(ValueError):
            custom = json.loads(wf.serialized_custom_status)
    return {
        "user_id": p.user_id,
        "template": p.template,
        "preferences": p.preferences.model_dump(exclude_none=True),
        "skills": {k: v.model_dump(exclude_none=True) for k, v in p.skills.items()},
        "effective": effective(c.baseline, t, p).model_dump() if t else None,
        "workflow": {
            "instance_id": instance_id(p.user_id),
            "status": wf.runtime_status.name.lower() if wf is not None else "missing",
            "phase": (custom or {}).get("phase"),
        },
        "usage_today": usage or {"tokens": 0, "messages": 0, "jobs": 0},
        "created_at": p.created_at,
    }


class AgentUsage(BaseModel):
    tokens: int = 0
    messages: int = 0
    jobs: int = 0


class AgentWorkflow(BaseModel):
    instance_id: str
    status: str = Field(description="the workflow's status; missing when it is not running")
    phase: str | None = None


class AgentView(BaseModel):
    """A user's agent: its template, customisation, what is in effect, and its workflow."""

    user_id: str
    template: str
    preferences: dict[str, Any]
    skills: dict[str, dict[str, Any]]
    effective: dict[str, Any] | None = Field(
        description="what applies after the baseline and template narrow the customisation"
    )
    workflow: AgentWorkflow
    usage_today: AgentUsage
    created_at: str | None = None


class ProvisionedAgent(AgentView):
    created: bool = Field(description="False when the agent already existed")


class MessageAccepted(BaseModel):
    message_id: str
    status: str
    seq: int


class Message(BaseModel):
    """A message and, once answered, its reply."""

    model_config = ConfigDict(extra="allow")
    message_id: str
    seq: int
    kind: str = Field(description="user, or job (a schedule fired)")
    text: str
    status: Literal["queued", "running", "answered", "failed", "budget_exhausted"]
    reply: str | None = None
    error: str | None = None
    usage: dict[str, Any] | None = None
    created_at: str
    answered_at: str | None = None


class MessageList(BaseModel):
    messages: list[Message]


class Memory(BaseModel):
    user_id: str
    memory: list[Any]


class AgentUsageView(BaseModel):
    user_id: str
    day: str
    today: AgentUsage
    total: AgentUsage
    max_daily_tokens: int | None


class Schedule(BaseModel):
    id: str
    prompt: str
    every_s: float | None
    daily_at: str | None
    created_at: str
    fired: int
    last_fire_at: str | None


class ScheduleList(BaseModel):
    schedules: list[Schedule]


class ScheduleCancelled(BaseModel):
    schedule_id: str
    cancelled: bool


class Deprovisioned(BaseModel):
    """What deprovisioning removed, read back: ``clean`` when nothing is left."""

    user_id: str
    deleted_keys: int
    purged_workflows: int
    keys_left: list[str]
    workflows_left: list[str]
    clean: bool


class AgentSummary(BaseModel):
    """An item of ``GET /v1/agents``."""

    user_id: str
    template: str
    created_at: str | None = None
    status: str = Field(description="the agent workflow's status (missing: not running)")
    messages: int = Field(description="messages the agent received so far")
    usage_today: AgentUsage
    usage_total: AgentUsage


class AgentList(BaseModel):
    """A page of ``GET /v1/agents``: newest first; ``next_cursor`` as in ``GET /v1/runs``."""

    items: list[AgentSummary]
    next_cursor: str | None


def _usage(raw: Any) -> AgentUsage:
    return AgentUsage.model_validate(raw) if isinstance(raw, dict) else AgentUsage()


@router.get("", response_model=AgentList)
async def list_agents(
    services: ServicesDep,
    catalog: AgentCatalogDep,
    owner: OwnerScopeDep,
    template: Annotated[
        str | None, Query(pattern=NAME_RE, description="only agents from this template")
    ] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> AgentList:
    """Provisioned agents newest first, each with its workflow status, message count and
    usage, from the durable agent catalog."""
    q = AgentQuery(
        template=template,
        owner=owner,
        limit=limit,
        cursor=decode_cursor(cursor),
    )
    entries, nxt = await catalog.scan(q)
    users = [str(e["id"]) for e in entries]
    day = today()
    keys = [key(u, part) for u in users for part in ("profile", "seq", "usage")]
    keys += [key(u, "usage", day) for u in users]
    got = await catalog.state.get_many(keys) if keys else {}
    client = services.workflows
    sem = asyncio.Semaphore(16)

    async def status_of(user: str) -> str:
        if client is None:
            return "unknown"
        async with sem:
            st = await read_state(client, instance_id(user), payloads=False)
        return st.runtime_status.name.lower() if st is not None else "missing"

    statuses = await asyncio.gather(*(status_of(u) for u in users))
    items = []
    for user, st in zip(users, statuses, strict=True):
        prof = got.get(key(user, "profile"))
        if not isinstance(prof, dict):
            continue  # deprovisioned while listed
        items.append(
            AgentSummary(
                user_id=user,
                template=str(prof.get("template", "")),
                created_at=prof.get("created_at"),
                status=st,
                messages=int(got.get(key(user, "seq")) or 0),
                usage_today=_usage(got.get(key(user, "usage", day))),
                usage_total=_usage(got.get(key(user, "usage"))),
            )
        )
    return AgentList(items=items, next_cursor=nxt.encode() if nxt else None)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProvisionedAgent,
    responses={
        200: {"description": "existed", "model": ProvisionedAgent},
        **errors(_409="the user has an agent of another template"),
    },
)
async def provision(
    body: Provision, c: CtxDep, response: Response, caller: CallerDep
) -> dict[str, Any]:
    """Provision a user's agent (idempotent: the same request again answers 200).
    A user token provisions only its own agent."""
    user = check_user_id(body.user_id)
    if not caller.is_operator and user != caller.user:
        raise ValidationFailed(
            f"user_id: a user token provisions only its own agent ({caller.user!r})",
            field="user_id",
        )
    if body.template not in c.templates:
        raise ValidationFailed(
            f"template: unknown template {body.template!r} (known: {sorted(c.templates)})",
            field="template",
        )
    async with c.store.locked(user):
        raw = await c.store.get(user, "profile")
        if raw is not None:
            p = Profile.model_validate(raw)
            if p.template != body.template:
                raise RunConflict(
                    f"user {user!r} already has an agent with template {p.template!r}",
                    field="template",
                )
            response.status_code = status.HTTP_200_OK
            created = False
        else:
            p = Profile(user_id=user, template=body.template, created_at=now_iso())
            await c.store.put(user, "profile", value=p.model_dump(mode="json"))
            created = True
        await _ensure_workflow(c, user)
        await c.services.agent_catalog.add(user, p.template)
    view = _view(c, p, await _state(c.client, instance_id(user), payloads=True), None)
    return {**view, "created": created}


@router.get("/{user_id}", response_model=AgentView, responses=errors(404))
async def get_agent(user_id: OwnedUser, c: CtxDep) -> dict[str, Any]:
    p = await c.profile(user_id)
    wf = await _state(c.client, instance_id(user_id), payloads=True)
    return _view(c, p, wf, await c.store.get(user_id, "usage", today()))


@router.patch("/{user_id}", response_model=AgentView, responses=errors(403, 404))
async def customise(user_id: OwnedUser, body: Customise, c: CtxDep) -> dict[str, Any]:
    """Change preferences and skills. Anything that would widen the operator baseline
    or the template is refused with 403 ``baseline_violation`` naming the field."""
    async with c.store.locked(user_id):
        p = await c.profile(user_id)
        prefs = p.preferences
        if body.preferences is not None:
            prefs = prefs.model_copy(update=body.preferences.model_dump(exclude_unset=True))
        skills = dict(p.skills)
        for name, skill in (body.skills or {}).items():
            if skill is None:
                skills.pop(name, None)
            else:
                skills[name] = skill
        check_customisation(c.baseline, c.templates[p.template], prefs, skills)
        p = p.model_copy(update={"preferences": prefs, "skills": skills})
        await c.store.put(user_id, "profile", value=p.model_dump(mode="json"))
    wf = await _state(c.client, instance_id(user_id), payloads=True)
    return _view(c, p, wf, await c.store.get(user_id, "usage", today()))


@router.post(
    "/{user_id}/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageAccepted,
    responses=errors(404, 429),
)
async def post_message(
    user_id: OwnedUser, body: NewMessage, c: CtxDep, caller: CallerDep
) -> dict[str, Any]:
    """Queue a message for the user's agent; 202 with its id. Answered in order.

    From a user (not the operator) a message is a start: it counts against the start
    rate, and the user may have at most ``SWARMD_USER_MAX_TURNS`` messages queued or
    running (429 with ``Retry-After``)."""
    check_user_id(user_id)

    def check(raw_profile: dict[str, Any]) -> None:
        if body.skill is not None and body.skill not in Profile.model_validate(raw_profile).skills:
            raise NotFound(f"skill: user has no skill named {body.skill!r}", field="skill")

    fast = c.services.fast_path  # None: v1/v2, the workflow answers every message
    wake = fast is None

    def lease(current: Lease) -> Lease | None:
        nonlocal wake
        assert fast is not None
        taken, wake = accept(fast, current)
        return taken

    async def enqueue() -> dict[str, Any] | None:
        return await c.store.enqueue(
            user_id,
            body.text,
            "user",
            check=check,
            lease=lease if fast is not None else None,
            skill=body.skill,
        )

    if caller.user is None:
        msg = await enqueue()
    else:
        settings = c.services.settings
        # counted, and one at a time per user here: the check below is exact per replica
        async with c.services.identity.start_rate.starting(caller.user):
            seq = int(await c.store.get(user_id, "seq") or 0)
            read = partial(c.store.get, user_id, "msg")
            limit = settings.user_max_turns
            if await turns_in_flight(seq, read, limit) >= limit:
                raise TooManyRequests.in_flight(
                    "turns", user_id, limit, settings.user_busy_retry_after_s
                )
            msg = await enqueue()
    if msg is None:
        raise not_found_agent(user_id)
    if fast is not None and msg["lease"] is not None:  # this process answers it, now
        fast.kick(user_id, msg["lease"].done)
        wake = not still_watched(fast, msg["lease_was"])
    if wake:
        await c.wake(user_id)
    return {"message_id": msg["message_id"], "status": msg["status"], "seq": msg["seq"]}


async def _message(c: Ctx, user: str, mid: str) -> dict[str, Any]:
    """The user's message ``mid`` (one read: the profile and the message together)."""
    check_user_id(user)
    seq = parse_message_id(mid)
    keys = [key(user, "profile"), *([key(user, "msg", seq)] if seq is not None else [])]
    snap = await c.store.state.get_many(keys)
    if snap[keys[0]].value is None:
        raise AgentNotFound(f"no agent for user {user!r}", field="user_id")
    msg = snap[keys[1]].value if seq is not None else None
    if msg is None:
        raise NotFound(f"no message {mid!r} for user {user!r}", field="message_id")
    return dict(msg)


@router.get("/{user_id}/messages", response_model=MessageList, responses=errors(404))
async def list_messages(
    user_id: OwnedUser, c: CtxDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> dict[str, Any]:
    await c.profile(user_id)
    seq = int(await c.store.get(user_id, "seq") or 0)
    msgs = [await c.store.get(user_id, "msg", i) for i in range(max(1, seq - limit + 1), seq + 1)]
    return {"messages": [m for m in msgs if m is not None]}


@router.get("/{user_id}/messages/{message_id}", response_model=Message, responses=errors(404))
async def get_message(
    user_id: OwnedUser,
    message_id: str,
    c: CtxDep,
    wait_s: Annotated[float, Query(ge=0, le=60, description="wait for the reply")] = 0,
) -> dict[str, Any]:
    """The message and its reply (``status``: queued, running, answered, failed,
    budget_exhausted). ``wait_s`` long-polls until the reply is there."""
    deadline = time.monotonic() + wait_s
    seq = parse_message_id(message_id) or 0
    msg: dict[str, Any] | None = None
    while True:
        # registered before the read, so a reply stored in between is not missed; woken
        # with the stored message when this process stores it, re-read now and then anyway
        with notify.waiter(user_id, seq) as stored:
            if msg is None:
                msg = await _message(c, user_id, message_id)
            else:
                msg = await c.store.get(user_id, "msg", seq) or msg
            left = min(WAIT_POLL_S, deadline - time.monotonic())
            if msg["status"] in FINAL or left <= 0:
                return msg
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stored.wait(), left)
            if stored.msg is not None and stored.msg["status"] in FINAL:
                return stored.msg


@router.get(
    "/{user_id}/messages/{message_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "status, then the reply"},
        **errors(404),
    },
)
async def stream_message(
    user_id: OwnedUser, message_id: str, c: CtxDep, settings: SettingsDep
) -> StreamingResponse:
    """Server-sent events: the message's status changes, then the reply (sent as soon
    as this process stores it; other changes are seen every ``sse_poll_s``)."""
    await _message(c, user_id, message_id)
    seq = parse_message_id(message_id) or 0

    async def events() -> AsyncIterator[str]:
        last = None
        while True:
            with notify.waiter(user_id, seq) as stored:
                msg = await _message(c, user_id, message_id)
                if msg["status"] != last:
                    last = msg["status"]
                    yield f"event: {last}\ndata: {json.dumps(msg)}\n\n"
                if last in FINAL:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stored.wait(), settings.sse_poll_s)

    return StreamingResponse(events(), media_type="text/event-stream")


@router.get("/{user_id}/memory", response_model=Memory, responses=errors(404))
async def get_memory(user_id: OwnedUser, c: CtxDep) -> dict[str, Any]:
    """The agent's conversation memory (this user's only)."""
    await c.profile(user_id)
    return {"user_id": user_id, "memory": await c.store.get(user_id, "memory") or []}


@router.get("/{user_id}/usage", response_model=AgentUsageView, responses=errors(404))
async def get_usage(user_id: OwnedUser, c: CtxDep) -> dict[str, Any]:
    """Operator view: tokens, messages and jobs today and in total, and the daily budget."""
    p = await c.profile(user_id)
    t = c.templates.get(p.template)
    return {
        "user_id": user_id,
        "day": today(),
        "today": await c.store.get(user_id, "usage", today())
        or {"tokens": 0, "messages": 0, "jobs": 0},
        "total": await c.store.get(user_id, "usage") or {"tokens": 0, "messages": 0, "jobs": 0},
        "max_daily_tokens": effective(c.baseline, t, p).max_daily_tokens if t else None,
    }


@router.get("/{user_id}/schedules", response_model=ScheduleList, responses=errors(404))
async def list_schedules(user_id: OwnedUser, c: CtxDep) -> dict[str, Any]:
    await c.profile(user_id)
    return {"schedules": list((await c.store.get(user_id, "schedules") or {}).values())}


@router.post(
    "/{user_id}/schedules",
    status_code=status.HTTP_201_CREATED,
    response_model=Schedule,
    responses=errors(404),
)
async def add_schedule(user_id: OwnedUser, body: NewSchedule, c: CtxDep) -> dict[str, Any]:
    """A durable schedule owned by the user's agent: every ``every_s`` seconds or daily at
    ``daily_at`` (UTC), ``prompt`` becomes a message and its reply lands in the messages."""
    if (body.every_s is None) == (body.daily_at is None):
        raise ValidationFailed("every_s: give exactly one of every_s or daily_at", field="every_s")
    async with c.store.locked(user_id):
        await c.profile(user_id)
        schedules = await c.store.get(user_id, "schedules") or {}
        sid = "s" + uuid.uuid4().hex[:12]
        s = {
            "id": sid,
            "prompt": body.prompt,
            "every_s": body.every_s,
            "daily_at": body.daily_at,
            "created_at": now_iso(),
            "fired": 0,
            "last_fire_at": None,
        }
        schedules[sid] = s
        await c.store.put(user_id, "schedules", value=schedules)
    await c.wake(user_id)
    return s


@router.delete(
    "/{user_id}/schedules/{schedule_id}", response_model=ScheduleCancelled, responses=errors(404)
)
async def cancel_schedule(user_id: OwnedUser, schedule_id: str, c: CtxDep) -> dict[str, Any]:
    async with c.store.locked(user_id):
        await c.profile(user_id)
        schedules = await c.store.get(user_id, "schedules") or {}
        if schedules.pop(schedule_id, None) is None:
            raise NotFound(f"no schedule {schedule_id!r}", field="schedule_id")
        await c.store.put(user_id, "schedules", value=schedules)
    await c.wake(user_id)
    return {"schedule_id": schedule_id, "cancelled": True}


async def _purge(client: DaprWorkflowClient, iid: str) -> Literal["purged", "absent"]:
    st = await _state(client, iid)
    if st is None:
        return "absent"
    if st.runtime_status not in ENDED:
        await client.terminate_workflow(iid, recursive=True)
        deadline = time.monotonic() + 30
        while st is not None and st.runtime_status not in ENDED:
            if time.monotonic() > deadline:
                raise DependencyUnavailable(f"workflow {iid!r} did not terminate within 30 s")
            await asyncio.sleep(0.1)
            st = await _state(client, iid)
    await client.purge_workflow(iid, recursive=True)
    return "purged"


@router.delete("/{user_id}", response_model=Deprovisioned, responses=errors(404))
async def deprovision(user_id: OwnedUser, c: CtxDep) -> dict[str, Any]:
    """Deprovision completely: terminate and purge the workflow and every turn's agent
    loop, delete every key of the user, then read each back and report what is left."""
    await c.profile(user_id)
    async with c.store.locked(user_id):
        keys = await c.store.all_keys(user_id)
        seq = int(await c.store.get(user_id, "seq") or 0)
        await c.store.state.delete(key(user_id, "profile"))  # the workflow stops at its next poll
        await c.services.agent_catalog.remove(user_id)
    await _purge(c.client, instance_id(user_id))
    children = [turn_instance_id(user_id, i) for i in range(1, seq + 1)]
    for iid in children:
        await _purge(c.client, iid)
    async with c.store.locked(user_id):
        for k in keys:
            await c.store.state.delete(k)
        left = [k for k in keys if await c.store.state.get(k) is not None]
    wf_left = [
        iid for iid in [instance_id(user_id), *children] if await _state(c.client, iid) is not None
    ]
    return {
        "user_id": user_id,
        "deleted_keys": len(keys),
        "purged_workflows": 1 + len(children),
        "keys_left": left,
        "workflows_left": wf_left,
        "clean": not left and not wf_left,
    }
