"""One error hierarchy for swarmd, mapped to HTTP in one handler (``swarmd.api.app``).

::

    SwarmdError                      base; never raised itself
    ├── RequestError                 the caller sent something we refuse (4xx)
    │   ├── InvalidJson              400 the body is not JSON at all
    │   ├── ValidationFailed         422 body/spec invalid; names the field
    │   ├── MalformedMessage         400 a pub/sub message that is not a JSON object
    │   ├── UnknownSwarm             422 no such swarm pattern (names the field)
    │   ├── NotFound                 404 no such record (message, schedule, token)
    │   ├── RunNotFound              404 no such run id
    │   ├── AgentNotFound            404 no agent for that user (or another user's: same answer)
    │   ├── RunConflict              409 run id reused with a different request
    │   ├── RunStateConflict         409 the run's status does not allow that action
    │   ├── LockBusy                 409 a distributed lock is held by another owner
    │   ├── LockNotHeld              404 this process does not hold that lock
    │   ├── Unauthorized             401 missing, wrong, revoked or expired credentials
    │   ├── Forbidden                403 an operator-only endpoint called with a user token
    │   ├── BaselineViolation        403 a user-agent customisation widens the baseline
    │   ├── TooManyRequests          429 a per-user limit (in flight, start rate); Retry-After
    │   ├── NotConfigured            404 a front door that is not set up (e.g. Slack)
    │   ├── PayloadTooLarge          413 body above settings.max_body_bytes
    │   └── UnsupportedMediaType     415 a body that is not application/json
    ├── DependencyUnavailable        503 sidecar / gateway not reachable (retry later)
    │   ├── LeaseLost                503 this process lost its lock-owner lease
    │   └── JournalUnavailable       the call journal cannot be read or written: an
    │                                agent group fails as a whole and is retried
    └── ActivityError                raised inside activities; crosses the workflow
        ├── RetryableActivityError       boundary by type name: the engine's retry
        │   └── GatewayUnreachable       policy retries the first, never the second;
        │                                a call never sent is retried for minutes
        └── NonRetryableActivityError
            └── GuardrailBlocked         the gateway's guardrail refused the call

Activity errors travel through Dapr as a failure with the exception's type name,
so workflows classify them by ``TaskFailedError.details.error_type``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any


class SwarmdError(Exception):
    """Base of every error swarmd raises on purpose."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return body


class RequestError(SwarmdError):
    status_code = 400
    code = "bad_request"


class InvalidJson(RequestError):
    """The body could not be parsed as JSON at all (400, unlike a 422 for bad values)."""

    status_code = 400
    code = "invalid_json"


class ValidationFailed(RequestError):
    status_code = 422
    code = "validation_failed"


class MalformedMessage(RequestError):
    """A ``swarm.tasks`` message whose data is not JSON, or not a JSON object."""

    status_code = 400
    code = "bad_json"


class UnknownSwarm(RequestError):
    status_code = 422
    code = "unknown_swarm"


class NotFound(RequestError):
    status_code = 404
    code = "not_found"


class RunNotFound(RequestError):
    status_code = 404
    code = "run_not_found"


class AgentNotFound(RequestError):
    status_code = 404
    code = "agent_not_found"


class RunEntryNotFound(RequestError):
    """A run exists but has no agent or step with that id (its timeline)."""

    status_code = 404
    code = "run_entry_not_found"


class RunConflict(RequestError):
    status_code = 409
    code = "run_conflict"


class RunStateConflict(RequestError):
    """E.g. resuming a run that is not suspended, or purging one still running."""

    status_code = 409
    code = "run_state_conflict"


class LockBusy(RequestError):
    status_code = 409
    code = "lock_busy"


class LockNotHeld(RequestError):
    status_code = 404
    code = "lock_not_held"


class Unauthorized(RequestError):
    status_code = 401
    code = "unauthorized"


class Forbidden(RequestError):
    """Operator-only endpoints answer this to user tokens. Never used for another
    user's resources: those are 404s (``RunNotFound``, ``AgentNotFound``), so their
    existence does not leak."""

    status_code = 403
    code = "forbidden"


class TooManyRequests(RequestError):
    """A per-user limit refused the call; ``retry_after_s`` becomes ``Retry-After``."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: float, limit: str, **extra: Any) -> None:
        super().__init__(message, limit=limit, retry_after_s=round(retry_after_s, 3), **extra)
        self.retry_after_s = retry_after_s

    @classmethod
    def in_flight(cls, what: str, user: str, limit: int, retry_after_s: float) -> TooManyRequests:
        """``user`` already has ``limit`` ``what`` (runs, turns) in flight."""
        return cls(
            f"user {user!r} has {limit} {what} in flight (the limit per user); "
            "retry when one has finished",
            retry_after_s=retry_after_s,
            limit=f"{what.replace(' ', '_')}_in_flight",
        )


class NotConfigured(RequestError):
    status_code = 404
    code = "not_configured"


class BaselineViolation(RequestError):
    """A customisation asked for more than the operator baseline or template allows."""

    status_code = 403
    code = "baseline_violation"


class PayloadTooLarge(RequestError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    status_code = 415
    code = "unsupported_media_type"


class DependencyUnavailable(SwarmdError):
    status_code = 503
    code = "dependency_unavailable"


class LeaseLost(DependencyUnavailable):
    """This process's owner incarnation lost its lease (fenced, or no heartbeat in time)."""

    code = "lease_lost"


class JournalUnavailable(DependencyUnavailable):
    """The state store under the call journal failed. Never an agent's failure: the
    group activity fails and the workflow retries it (journaled calls stay free)."""

    code = "journal_unavailable"


class ActivityError(SwarmdError):
    """Raised inside an activity."""


class RetryableActivityError(ActivityError):
    """Transient: rate limit, 5xx, timeout, connection reset. The workflow retries."""

    code = "retryable"


class GatewayUnreachable(RetryableActivityError):
    """No connection to the LLM gateway: the call was never made, so it is safe to
    retry it for much longer than a failed call (a proxy restart can take minutes)."""

    code = "gateway_unreachable"


class NonRetryableActivityError(ActivityError):
    """Permanent: bad request, auth, unknown model, invalid tool arguments."""

    code = "non_retryable"


class GuardrailBlocked(NonRetryableActivityError):
    """A gateway guardrail (prompt-injection guard) refused an LLM call. The message is
    ``<guardrail>: <reason>``; the agent loop records the agent as ``blocked``."""

    code = "guardrail_blocked"


def field_path(
    loc: Iterable[object], *, prefix: Iterable[str] = (), sep: str = ".", drop: Collection[str] = ()
) -> str:
    """A pydantic error location as a field name: ``("agents", 0, "max_turns")`` ->
    ``agents.0.max_turns`` (``drop``: location parts left out, e.g. FastAPI's ``body``)."""
    return sep.join(str(p) for p in (*prefix, *loc) if p not in drop)


def validation_failed(
    errors: Iterable[Mapping[str, Any]],
    *,
    prefix: Iterable[str] = (),
    drop: Collection[str] = (),
    whole: str = "",
) -> ValidationFailed:
    """One 422 for pydantic's ``exc.errors()``: names the first invalid field and lists all
    (``whole``: the name of an error about the value as a whole, e.g. ``body``)."""
    fields = [
        {"field": field_path(e["loc"], prefix=prefix, drop=drop) or whole, "message": e["msg"]}
        for e in errors
    ]
    first = fields[0] if fields else {"field": whole, "message": "invalid request"}
    return ValidationFailed(
        f"{first['field']}: {first['message']}", field=first["field"], errors=fields
    )
