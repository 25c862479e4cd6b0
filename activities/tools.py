"""The ``swarmd.call_tool`` activity and the small registry of real tools agents may use.

Tools:

* ``calculator``: safe arithmetic (an AST walk over numbers and + - * / // % **).
* ``http_get``: GET of a URL whose host is on the operator's allow-list.
* ``python``: Python source run in CPython compiled to WASI under wasmtime, with
  CPU, memory, wall-clock and output limits and no host files or network
  (:mod:`swarmd.activities.sandbox`). A limit hit is a result, not a failure.
* ``memory_write`` / ``memory_read``: the agent's memory in the Dapr state
  store, keyed by user (or run) and agent, with a TTL. ``append`` is a
  read-modify-write under a distributed lock on the key, so concurrent runs of
  the same user never lose each other's lines.

An agent can only call the tools its spec allows (checked here again, not only
when the model is offered the tools). Bad arguments are the model's mistake:
they return an error result to the model instead of failing the step.
"""

from __future__ import annotations

import ast
import hashlib
import json
import operator
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
from dapr.ext.workflow import WorkflowActivityContext

from swarmd.activities.sandbox import Sandbox
from swarmd.engine.models import ToolRequest
from swarmd.errors import (
    DependencyUnavailable,
    LockBusy,
    NonRetryableActivityError,
    RetryableActivityError,
)

TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "calculator": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression, e.g. '(2+3)*4'.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
    "http_get": {
        "name": "http_get",
        "description": "GET a URL on an allow-listed host; returns status and the first 4 KB.",
        "parameters": {
            "type": "object",
            "properties": {"url": {"type": "string"}},
            "required": ["url"],
        },
    },
    "memory_write": {
        "name": "memory_write",
        "description": "Remember a value under a key for later turns or runs.",
        "parameters": {
            "type": "object",
            "properties": {
                "key": {"type": "string"},
                "value": {"type": "string"},
                "append": {
                    "type": "boolean",
                    "description": "Add the value as a new line instead of replacing",
                },
            },
            "required": ["key", "value"],
        },
    },
    "python": {
        "name": "python",
        "description": (
            "Run Python 3.12 source in a sandbox (standard library only, no network, no host "
            "files; /tmp is an empty scratch directory). Print what you need: the result is "
            "JSON with stdout, stderr, exit_code and, when a limit stopped it, error."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
        },
    },
    "memory_read": {
        "name": "memory_read",
        "description": "Read a value remembered earlier.",
        "parameters": {
            "type": "object",
            "properties": {"key": {"type": "string"}},
            "required": ["key"],
        },
    },
}


class ToolArgumentError(ValueError):
    """The model passed arguments the tool cannot use."""


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNOPS: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def safe_eval(expression: str) -> float | int:
    """Evaluate arithmetic only; anything else (names, calls, attributes) is refused."""
    if len(expression) > 200:
        raise ToolArgumentError("expression longer than 200 characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ToolArgumentError(f"not an arithmetic expression: {exc.msg}") from exc

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ToolArgumentError("exponent too large")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
            return _UNOPS[type(node.op)](ev(node.operand))
        raise ToolArgumentError(f"unsupported element: {type(node).__name__}")

    try:
        return ev(tree)  # type: ignore[no-any-return]
    except ZeroDivisionError as exc:
        raise ToolArgumentError("division by zero") from exc


StateGet = Callable[[str], Awaitable[str | None]]
StatePut = Callable[[str, str, int], Awaitable[None]]
#: ``lock(resource, ttl_s, wait_s=...)``: an exclusive distributed lock while the block runs
LockFn = Callable[..., AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class ToolDeps:
    """What the tools need, built in the entrypoint."""

    http: httpx.AsyncClient
    allowed_hosts: frozenset[str]
    state_get: StateGet
    state_put: StatePut
    memory_ttl_s: int = 7 * 24 * 3600
    lock: LockFn | None = None
    #: ``on_user_key(user, key)``: a user-scoped key was written (the user agents' key index)
    on_user_key: Callable[[str, str], Awaitable[None]] | None = None
    #: the ``python`` tool's sandbox (one per process); None: the tool is unavailable
    sandbox: Sandbox | None = None


def memory_key(req: ToolRequest, key: str) -> str:
    owner = f"user:{req.user}" if req.user else f"run:{req.run_id}"
    full = f"memory|{owner}|{req.agent}|{key}"
    if "||" in full:  # Dapr refuses state keys holding its own separator
        raise ToolArgumentError("memory keys may not contain '||'")
    return full


async def memory_append(deps: ToolDeps, key: str, value: str) -> None:
    """Read-modify-write of one memory key under a per-key lock."""
    if deps.lock is None:
        raise NonRetryableActivityError("memory_write append needs the lock store")
    resource = "memory." + hashlib.sha256(key.encode()).hexdigest()[:40]
    try:
        async with deps.lock(resource, 30, wait_s=10.0):
            old = await deps.state_get(key)
            await deps.state_put(key, value if not old else f"{old}\n{value}", deps.memory_ttl_s)
    except (LockBusy, DependencyUnavailable) as exc:
        raise RetryableActivityError(f"memory_write append: {exc.message}") from exc


async def run_tool(deps: ToolDeps, req: ToolRequest, args: dict[str, Any]) -> dict[str, Any]:
    if req.name == "calculator":
        return {"result": safe_eval(str(args.get("expression", "")))}
    if req.name == "http_get":
        url = str(args.get("url", ""))
        host = urlparse(url).hostname or ""
        if urlparse(url).scheme not in ("http", "https") or host not in deps.allowed_hosts:
            raise ToolArgumentError(f"host {host!r} is not on the allow-list")
        try:
            resp = await deps.http.get(url, follow_redirects=False, timeout=10)
        except httpx.TransportError as exc:
            raise RetryableActivityError(f"http_get failed: {exc}") from exc
        return {"status": resp.status_code, "body": resp.text[:4096]}
    if req.name == "memory_write":
        key = memory_key(req, str(args["key"]))
        if req.user and deps.on_user_key is not None:
            await deps.on_user_key(req.user, key)  # indexed before written: never orphaned
        if args.get("append"):
            await memory_append(deps, key, str(args["value"]))
            return {"ok": True, "appended": True}
        await deps.state_put(key, str(args["value"]), deps.memory_ttl_s)
        return {"ok": True}
    if req.name == "memory_read":
        return {"value": await deps.state_get(memory_key(req, str(args["key"])))}
    if req.name == "python":
        return await run_python(deps, args)
    raise NonRetryableActivityError(f"unknown tool {req.name!r}", field="name")


async def run_python(deps: ToolDeps, args: dict[str, Any]) -> dict[str, Any]:
    if deps.sandbox is None:
        raise NonRetryableActivityError("the python tool has no sandbox in this process")
    code = args.get("code")
    if not isinstance(code, str):
        raise ToolArgumentError("'code' must be a string of Python source")
    if len(code.encode()) > deps.sandbox.limits.code_bytes:
        raise ToolArgumentError(f"'code' is longer than {deps.sandbox.limits.code_bytes} bytes")
    result = (await deps.sandbox.run(code)).model_dump()
    if result["error"] is None:  # only named when a limit or a crash stopped or cut it
        del result["error"]
    return result


def make_call_tool(
    deps: ToolDeps,
) -> Callable[[WorkflowActivityContext, ToolRequest], Awaitable[dict[str, Any]]]:
    async def call_tool(ctx: WorkflowActivityContext, req: ToolRequest) -> dict[str, Any]:
        return await use_tool(deps, ToolRequest.model_validate(req))

    return call_tool


async def use_tool(deps: ToolDeps, req: ToolRequest) -> dict[str, Any]:
    """One tool call: the model's mistakes (a tool it may not use, bad arguments) come
    back as an ``error`` result for it to read; only infrastructure failures raise."""
    if req.name not in req.allowed:
        return {"error": f"tool {req.name!r} is not allowed for this agent"}
    try:
        args = json.loads(req.arguments or "{}")
        if not isinstance(args, dict):
            raise ToolArgumentError("arguments must be a JSON object")
        return await run_tool(deps, req, args)
    except (ToolArgumentError, json.JSONDecodeError, KeyError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
