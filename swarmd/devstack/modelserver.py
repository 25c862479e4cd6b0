"""A local, deterministic, OpenAI-compatible model server.

It stands in for an LLM provider behind the real LiteLLM proxy (no provider is
reachable from our machines). It speaks the Chat Completions protocol
(``POST /v1/chat/completions``, ``GET /v1/models``), answers deterministically
from the prompt, and can inject latency, 429s and 5xx per model. Every request
it answers is appended to a JSON-lines log (time, model, status, a hash of the
messages, token counts) so tests can count calls exactly.

Deterministic answer rules (a real model would follow the same instructions):

* A prompt asking for ``exactly N subtasks`` gets N numbered lines.
* A prompt listing ``Workers: a, b, c`` and asking for the next worker gets one
  of the names, or ``DONE`` once ``Rounds so far: k`` reaches the number of
  workers.
* With ``tools`` offered and a user message containing
  ``use tool NAME with {json}``, the first answer is that tool call; after the
  tool result arrives the answer quotes it.
* A user message saying ``answer in N kilobytes`` gets exactly N KiB of text.
* Anything else: ``<hash>: <summary of the last user message>``. The answer
  does not depend on which deployment (model name) served it, so a run's
  output is the same whichever way the gateway routed its calls.

Control API (for tests and benchmarks; not part of the OpenAI protocol):

* ``GET /_control/log`` the answered requests; ``DELETE /_control/log`` clears.
* ``PUT /_control/faults`` ``[{"model": "mock-a" | "*", "status": 429,
  "rate": 1.0, "count": null, "latency_ms": 0, "contains": null, "user": null}]``
  replaces the fault rules. The first rule whose ``model`` matches (and, when
  ``contains`` is set, some message's text contains that string; when ``user`` is
  set, the request's OpenAI ``user`` field is that id) applies to a request. A rule
  scoped to one user leaves every other caller's calls alone.
* ``GET /health``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Fault:
    model: str = "*"
    status: int | None = None  # HTTP status to answer instead of a completion
    rate: float = 1.0  # share of matching requests that fail (seeded, deterministic)
    count: int | None = None  # fail only the first `count` matching requests
    latency_ms: int = 0
    contains: str | None = None  # only requests with a message holding this text
    user: str | None = None  # only requests whose OpenAI ``user`` field is this
    _seen: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(7))

    def matches(self, model: str, messages: list[dict[str, Any]], user: str | None) -> bool:
        if self.model not in ("*", model):
            return False
        if self.user is not None and self.user != user:
            return False
        return self.contains is None or any(
            self.contains in _text(m.get("content")) for m in messages
        )

    def should_fail(self) -> bool:
        if self.status is None:
            return False
        if self.count is not None and self._seen >= self.count:
            return False
        fail = self._rng.random() < self.rate
        if fail:
            self._seen += 1
        return fail


class RequestLog:
    """Append-only JSON-lines log of every answered request."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.entries.append(entry)
            if self.path is not None:
                with self.path.open("a") as f:
                    f.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
            if self.path is not None:
                self.path.write_text("")


def messages_hash(messages: list[dict[str, Any]]) -> str:
    canon = json.dumps(messages, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


_SUBTASKS = re.compile(r"exactly (\d+) subtasks", re.I)
_WORKERS = re.compile(r"Workers:\s*([\w\-, ]+)", re.I)
_ROUNDS = re.compile(r"Rounds so far:\s*(\d+)", re.I)
_SIZE = re.compile(r"answer in (\d+) kilobytes", re.I)
_TOOL = re.compile(r"use tool ([\w\-]+) with (?=\{)", re.I)
_JSON = json.JSONDecoder()


def tool_directive(text: str) -> tuple[str, str] | None:
    """``use tool NAME with {json}`` -> (NAME, the JSON object's text). The object is
    read by a JSON parser, so arguments may hold braces (Python source, for one)."""
    m = _TOOL.search(text)
    if m is None:
        return None
    try:
        _, end = _JSON.raw_decode(text, m.end())
    except json.JSONDecodeError:
        return None
    return m.group(1), text[m.end() : end]


def answer(model: str, messages: list[dict[str, Any]], tools: list[Any] | None) -> dict[str, Any]:
    """The deterministic assistant message for a request."""
    digest = messages_hash(messages)[:8]
    user_msgs = [m for m in messages if m.get("role") == "user"]
    last_user = _text(user_msgs[-1].get("content")) if user_msgs else ""
    prompt = "\n".join(_text(m.get("content")) for m in messages)

    if tools:
        tool_results = [m for m in messages if m.get("role") == "tool"]
        wanted = tool_directive(last_user)
        if wanted and not tool_results:
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{digest}",
                        "type": "function",
                        "function": {"name": wanted[0], "arguments": wanted[1]},
                    }
                ],
            }
        if tool_results:
            results = "; ".join(_text(m.get("content")) for m in tool_results)
            return {"role": "assistant", "content": f"{digest}: tool said {results}"}

    m = _SUBTASKS.search(prompt)
    if m:
        n = int(m.group(1))
        topic = " ".join(last_user.split()[-12:])[:120]
        lines = [
            f"{i}. Part {i} of {n}: examine {topic} (angle {digest}-{i})" for i in range(1, n + 1)
        ]
        return {"role": "assistant", "content": "\n".join(lines)}

    w = _WORKERS.search(prompt)
    if w and "next worker" in prompt.lower():
        workers = [x.strip() for x in w.group(1).split(",") if x.strip()]
        r = _ROUNDS.search(prompt)
        rounds = int(r.group(1)) if r else 0
        if not workers or rounds >= len(workers):
            return {"role": "assistant", "content": "DONE"}
        return {"role": "assistant", "content": workers[rounds % len(workers)]}

    size = _SIZE.search(last_user)
    if size:
        filler = f"{digest} " * 128  # 1152 bytes per line, deterministic
        kib = int(size.group(1))
        return {"role": "assistant", "content": (filler * kib)[: kib * 1024]}

    summary = " ".join(last_user.split()[:40])
    return {"role": "assistant", "content": f"{digest}: {summary}"}


class ModelServer:
    def __init__(self, log_path: Path | None, faults: list[Fault] | None = None) -> None:
        self.log = RequestLog(log_path)
        self.faults: list[Fault] = faults or []

    def _fault_for(
        self, model: str, messages: list[dict[str, Any]], user: str | None
    ) -> Fault | None:
        for f in self.faults:
            if f.matches(model, messages, user):
                return f
        return None

    async def chat(self, request: Request) -> Response:
        started = time.time()
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "invalid_request_error", "body is not JSON")
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            return _error(400, "invalid_request_error", "'model' is required", param="model")
        if not isinstance(messages, list) or not messages:
            return _error(
                400,
                "invalid_request_error",
                "'messages' must be a non-empty list",
                param="messages",
            )
        if body.get("stream"):
            return _error(
                400, "invalid_request_error", "streaming is not supported", param="stream"
            )
        user = body.get("user")
        fault = self._fault_for(model, messages, user if isinstance(user, str) else None)
        if fault and fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        h = messages_hash(messages)
        entry: dict[str, Any] = {
            "ts": started,
            "model": model,
            "messages_sha256": h,
            "user": body.get("user"),
        }
        if fault and fault.should_fail():
            entry.update(status=fault.status, latency_ms=round((time.time() - started) * 1000))
            self.log.add(entry)
            kind = "rate_limit_error" if fault.status == 429 else "server_error"
            headers = {"retry-after": "1"} if fault.status == 429 else {}
            return _error(fault.status or 500, kind, f"injected {fault.status}", headers=headers)

        msg = answer(model, messages, body.get("tools"))
        prompt_tokens = sum(_tokens(_text(m.get("content"))) for m in messages)
        completion_tokens = _tokens(msg.get("content") or json.dumps(msg.get("tool_calls")))
        entry.update(
            status=200,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=round((time.time() - started) * 1000),
        )
        self.log.add(entry)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(started),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": msg,
                        "finish_reason": "tool_calls" if msg.get("tool_calls") else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def models(self, _: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "swarmd-local"}
                    for m in ("mock-a", "mock-b", "mock-backup")
                ],
            }
        )

    async def get_log(self, _: Request) -> Response:
        return JSONResponse(self.log.entries)

    async def clear_log(self, _: Request) -> Response:
        self.log.clear()
        return Response(status_code=204)

    async def put_faults(self, request: Request) -> Response:
        raw = await request.json()
        if not isinstance(raw, list):
            return _error(422, "invalid_request_error", "faults must be a list")
        allowed = {"model", "status", "rate", "count", "latency_ms", "contains", "user"}
        try:
            self.faults = [Fault(**{k: v for k, v in f.items() if k in allowed}) for f in raw]
        except TypeError as exc:
            return _error(422, "invalid_request_error", str(exc))
        return JSONResponse([{k: getattr(f, k) for k in allowed} for f in self.faults])

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/_control/log", self.get_log, methods=["GET"]),
                Route("/_control/log", self.clear_log, methods=["DELETE"]),
                Route("/_control/faults", self.put_faults, methods=["PUT"]),
                Route("/health", self.health, methods=["GET"]),
            ]
        )


def _error(
    status: int,
    kind: str,
    message: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": status}},
        status_code=status,
        headers=headers,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="swarmd modelserver", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--log", type=Path, default=None, help="JSON-lines request log")
    p.add_argument("--latency-ms", type=int, default=0, help="latency for every model")
    args = p.parse_args(argv)
    faults = [Fault(latency_ms=args.latency_ms)] if args.latency_ms else []
    server = ModelServer(args.log, faults)
    uvicorn.run(server.app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
