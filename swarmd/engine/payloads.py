"""Large payloads by reference.

Workflow history travels through the sidecar's gRPC API, whose messages are
capped (4 MiB by default), and every byte in history is re-read on replay. So
an LLM answer above ``threshold`` bytes is written to the state store by the
activity that received it, and only a reference marker travels through
history: ``[[swarmd-ref:<key>]]``. Markers can be embedded in larger texts
(a reducer prompt joining many agent answers); activities resolve them right
before they need the bytes (the next LLM call), and the API resolves them when
it shows a run's output.

Keys are content-addressed (sha256), scoped by run, so a retried activity
writes the same key again (idempotent). Each key is recorded in the run's key
index (:class:`~swarmd.engine.runkeys.RunKeys`) before it is written, so
purging the run deletes it; ``ttl_s`` (``SWARMD_PAYLOAD_TTL_S``) bounds its
life otherwise.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from swarmd.engine.dapr import DaprClient
from swarmd.engine.runkeys import RunKeys
from swarmd.errors import NonRetryableActivityError

_MARKER = re.compile(r"\[\[swarmd-ref:([A-Za-z0-9_\-|.:]+)\]\]")
# keys use single "|" separators: Dapr refuses keys holding its own "||"


def marker(key: str) -> str:
    return f"[[swarmd-ref:{key}]]"


class PayloadStore:
    def __init__(self, state: DaprClient, threshold_bytes: int, ttl_s: int | None = None) -> None:
        self.state = state
        self.keys = RunKeys(state, ttl_s)
        self.threshold = threshold_bytes
        self.ttl_s = ttl_s

    async def offload(self, run_id: str, text: str | None, limit: int | None = None) -> str | None:
        """``text`` itself if small, else a marker for it (after storing it).

        ``limit`` (the run's per-agent history budget) lowers the threshold."""
        threshold = self.threshold if limit is None else min(self.threshold, limit)
        if text is None or len(text.encode()) <= threshold:
            return text
        digest = hashlib.sha256(text.encode()).hexdigest()
        key = f"payload|{run_id}|{digest}"
        await self.keys.add(run_id, [key])  # recorded first: purge finds it
        await self.state.put(key, text, self.ttl_s)
        return marker(key)

    async def resolve(self, text: str) -> str:
        """``text`` with every marker replaced by the payload it names."""
        return str(await self.resolve_any(text))

    async def resolve_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages with the markers in their ``content`` resolved (one bulk read
        for all of them; no other field is touched)."""
        contents = [m.get("content") for m in messages]
        resolved = await self.resolve_any([c if isinstance(c, str) else None for c in contents])
        return [
            {**m, "content": r} if isinstance(c, str) and c != r else m
            for m, c, r in zip(messages, contents, resolved, strict=True)
        ]

    async def resolve_any(self, value: Any) -> Any:
        """Resolve markers anywhere in a JSON-like value (for showing run output).

        Every payload is read in bulk round trips of ``_BULK`` keys: a 10,000-agent
        run's output holds 10,000 markers, which one by one took tens of seconds."""
        keys: dict[str, None] = {}
        _collect(value, keys)
        if not keys:
            return value
        found: dict[str, Any] = {}
        names = list(keys)
        for i in range(0, len(names), _BULK):
            got = await self.state.get_items(names[i : i + _BULK])  # every key, found or not
            found.update({k: e.value for k, e in got.items()})
        missing = [k for k, v in found.items() if v is None]
        if missing:
            raise NonRetryableActivityError(f"payload(s) missing from the state store: {missing}")
        return _substitute(value, found)


_BULK = 500


def _collect(value: Any, keys: dict[str, None]) -> None:
    if isinstance(value, str):
        if "[[swarmd-ref:" in value:
            keys.update(dict.fromkeys(_MARKER.findall(value)))
    elif isinstance(value, list):
        for v in value:
            _collect(v, keys)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, keys)


def _substitute(value: Any, found: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if "[[swarmd-ref:" not in value:
            return value
        return _MARKER.sub(lambda m: str(found[m.group(1)]), value)
    if isinstance(value, list):
        return [_substitute(v, found) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, found) for k, v in value.items()}
    return value
