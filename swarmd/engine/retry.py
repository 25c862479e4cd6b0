"""Engine-owned activity retries with exponential backoff and deterministic full jitter.

Dapr's own ``RetryPolicy`` has no jitter, so a transient gateway outage would
make every agent of a big swarm retry in lockstep. Instead, workflows call
activities through :func:`call_activity`, which waits on a durable timer
between attempts. The jitter is derived from a hash of the instance id, the
call's key and the attempt number, so replays compute the same delays
(workflow code must stay deterministic) while different agents spread out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from datetime import timedelta
from typing import Any

from dapr.ext.workflow import DaprWorkflowContext
from dapr.ext.workflow._durabletask.task import TaskFailedError

from swarmd.engine.models import RetrySpec

#: error type names (class names) that must never be retried
NON_RETRYABLE = frozenset(
    {"NonRetryableActivityError", "GuardrailBlocked", "NonRetryableError", "ValidationError"}
)


def backoff_delay(spec: RetrySpec, attempt: int, seed: str) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): full jitter in [cap/2, cap]."""
    cap = min(spec.max_interval_s, spec.first_interval_s * spec.backoff ** (attempt - 1))
    h = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    frac = h / 2**64
    return cap * (0.5 + 0.5 * frac)


def is_retryable(err: TaskFailedError) -> bool:
    return err.details.error_type not in NON_RETRYABLE


def call_activity(
    ctx: DaprWorkflowContext,
    name: str,
    payload: Any,
    spec: RetrySpec,
    key: str,
) -> Generator[Any, Any, Any]:
    """``result = yield from call_activity(...)``: call with retries, return the result."""
    attempt = 1
    while True:
        try:
            return (yield ctx.call_activity(name, input=payload))
        except TaskFailedError as err:
            if not is_retryable(err) or attempt >= spec.max_attempts:
                raise
            delay = backoff_delay(spec, attempt, f"{ctx.instance_id}/{key}/{attempt}")
            yield ctx.create_timer(timedelta(seconds=delay))
            attempt += 1
