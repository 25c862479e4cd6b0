"""Slack's request signature: ``v0=`` HMAC-SHA256 of ``v0:<timestamp>:<body>`` with the
app's signing secret, and a timestamp at most ``WINDOW_S`` from now (a replay of an
old, correctly signed request is refused)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from slack_sdk.signature import SignatureVerifier

from swarmd.errors import Unauthorized

#: Slack's own recommendation: refuse requests more than five minutes old
WINDOW_S = 300


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    clock: Callable[[], float] = time.time,
) -> None:
    """Raise :class:`Unauthorized` unless the request carries a valid, fresh signature."""
    ts = headers.get("x-slack-request-timestamp")
    sig = headers.get("x-slack-signature")
    if not ts or not sig:
        raise Unauthorized("missing X-Slack-Signature or X-Slack-Request-Timestamp")
    if not ts.isdigit():
        raise Unauthorized("X-Slack-Request-Timestamp is not a Unix time")
    if abs(clock() - int(ts)) > WINDOW_S:
        raise Unauthorized(
            f"X-Slack-Request-Timestamp is more than {WINDOW_S} s from now (a replay?)"
        )
    if not SignatureVerifier(secret).is_valid(body=body, timestamp=ts, signature=sig):
        raise Unauthorized("invalid X-Slack-Signature")
