"""The OpenAPI document, true to what the API does.

FastAPI derives most of it from the routes; :func:`document` completes it in one
place, so a route added anywhere gets the same treatment:

* every error status a route can answer, each with the one error body
  (:class:`ErrorResponse`): 401 where the bearer token applies; where there is a
  body 400 (not parseable JSON), 413 (above ``SWARMD_MAX_BODY_BYTES``) and 415 (not
  ``application/json``, or not the media type the route's ``requestBody`` names: the
  Slack slash commands take ``application/x-www-form-urlencoded``); 422 where there
  are parameters or a body; 503 on ``/v1`` (the sidecar or state store is
  unreachable); routes add their own 403/404/409/429 with :func:`errors` (a 429
  carries ``Retry-After``);
* request schemas exactly as strict as the handlers: ``POST /v1/runs`` says which
  swarms exist, that ``input.agents`` is for scatter_gather only and at most
  ``SWARMD_MAX_AGENTS``, and what an inline spec's pattern needs; ``POST /v1/agents``
  names the templates;
* ``/metrics`` as Prometheus text.

One rule no JSON Schema can state is left to the description: an inline spec's
agent names must be unique.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from swarmd.config import Settings
from swarmd.engine.spec import SpecRegistry, SwarmSpec


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """What went wrong; ``field`` names the offending field when there is one."""

    model_config = ConfigDict(extra="allow")
    code: str = Field(examples=["validation_failed"])
    message: str
    field: str | None = None
    errors: list[FieldError] | None = Field(None, description="422: every invalid field")


class ErrorResponse(BaseModel):
    error: ErrorBody


DESCRIPTIONS: dict[int, str] = {
    400: "The body is not valid JSON",
    401: "Missing or wrong bearer token",
    403: "Refused by policy (error.field names what)",
    404: "No such resource",
    409: "The resource's state does not allow this (error.status says what it is)",
    413: "The body is larger than SWARMD_MAX_BODY_BYTES",
    415: "The body is not application/json",
    422: "Invalid input; error.field names it",
    429: "A per-user limit (in flight, start rate): retry after Retry-After seconds",
    503: "A dependency (the Dapr sidecar or state store) is unreachable; retry later",
}

RETRY_AFTER = {
    "description": "Seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 1},
}
PROMETHEUS = "text/plain; version=1.0.0; charset=utf-8"
REF = "#/components/schemas/"


def errors(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (``described``: ``_404="..."``)."""
    out: dict[int | str, dict[str, Any]] = {}
    for c in codes:
        out[c] = {"model": ErrorResponse, "description": DESCRIPTIONS[c]}
    for k, text in described.items():
        out[int(k.lstrip("_"))] = {"model": ErrorResponse, "description": text}
    return out


def document(app: FastAPI, settings: Settings, specs: SpecRegistry, templates: list[str]) -> None:
    """Make ``app.openapi()`` return the completed document (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _complete(doc, settings, specs, templates)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF + "ErrorResponse"}}},
    }


def _complete(
    doc: dict[str, Any], settings: Settings, specs: SpecRegistry, templates: list[str]
) -> None:
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_defs(ErrorResponse))
    for path, ops in doc["paths"].items():
        for op in ops.values():
            responses: dict[str, Any] = op.setdefault("responses", {})
            wanted: set[int] = set()
            params = op.get("parameters") or []
            if op.get("security") or any(p.get("name") == "dapr-api-token" for p in params):
                wanted.add(401)  # the bearer token, or daprd's app token (pub/sub routes)
            for p in params:
                _not_null(p)
            if "requestBody" in op:
                wanted |= {400, 413, 415, 422}
            if op.get("parameters"):
                wanted.add(422)
            if path.startswith("/v1"):
                wanted.add(503)
            for want in wanted:
                responses.setdefault(str(want), {"description": DESCRIPTIONS[want]})
            kinds = list((op.get("requestBody") or {}).get("content") or {})
            if kinds and kinds != ["application/json"]:  # a route that takes its own kind
                responses["415"] = {"description": f"The body is not {' or '.join(kinds)}"}
            for key, resp in responses.items():
                if key.isdigit() and int(key) >= 400:
                    desc = resp.get("description") or DESCRIPTIONS.get(int(key), "Error")
                    if int(key) == 422 and desc == "Validation Error":
                        desc = DESCRIPTIONS[422]
                    responses[key] = _error_response(desc)
                    if key == "429":
                        responses[key]["headers"] = {"Retry-After": RETRY_AFTER}
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    metrics = doc["paths"].get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["responses"]["200"] = {
            "description": "Prometheus text exposition format",
            "content": {PROMETHEUS: {"schema": {"type": "string"}}},
        }
    _start_run(schemas, settings, specs)
    if "Provision" in schemas:
        schemas["Provision"]["properties"]["template"] = {
            "type": "string",
            "enum": sorted(templates),
            "description": "a role template",
        }


def _not_null(param: dict[str, Any]) -> None:
    """A path, query or header parameter is text or absent, never JSON null: drop the
    ``null`` FastAPI lists for an optional one."""
    schema = param.get("schema") or {}
    alts = schema.get("anyOf")
    if not isinstance(alts, list):
        return
    kept = [a for a in alts if a.get("type") != "null"]
    if len(kept) == 1:
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        param["schema"] = {**kept[0], **rest}
    elif len(kept) != len(alts):
        schema["anyOf"] = kept


def _defs(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema and those it refers to, as components."""
    s = model.model_json_schema(ref_template=REF + "{model}")
    defs: dict[str, Any] = s.pop("$defs", {})
    return {**defs, model.__name__: s}


def _start_run(schemas: dict[str, Any], settings: Settings, specs: SpecRegistry) -> None:
    """``StartRun`` as the handler checks it: a known swarm or an inline spec, never
    both; ``input.agents`` only for scatter_gather, at most ``SWARMD_MAX_AGENTS``."""
    from swarmd.api.runs import RunInputBody  # the model the handler validates input with

    if "StartRun" not in schemas:
        return
    schemas.update(_defs(SwarmSpec))
    start = schemas["StartRun"]
    run_id = start["properties"]["run_id"]
    inp = _defs(RunInputBody)["RunInputBody"]
    agents = inp["properties"]["agents"]
    for alt in agents.get("anyOf", [agents]):
        if alt.get("type") == "integer":
            alt["maximum"] = min(int(alt.get("maximum", settings.max_agents)), settings.max_agents)
    no_agents = copy.deepcopy(inp)
    no_agents["properties"]["agents"] = {
        "type": "null",
        "description": "only scatter_gather takes an agent count",
    }
    schemas["RunInputScatterGather"] = {**inp, "title": "RunInputScatterGather"}
    schemas["RunInput"] = {**no_agents, "title": "RunInput"}
    spec = schemas["SwarmSpec"]
    spec["properties"]["agents"]["maxItems"] = min(
        int(spec["properties"]["agents"].get("maxItems", settings.max_agents)),
        settings.max_agents,
    )
    spec["description"] = "An inline swarm spec. Agent names must be unique."
    agent = {"$ref": REF + "AgentSpec"}
    rules: dict[str, dict[str, Any]] = {
        "scatter_gather": {},
        "pipeline": {},
        "supervisor": {"required": ["coordinator"], "properties": {"coordinator": agent}},
        "debate": {
            "properties": {"agents": {"minItems": 2}},
            "anyOf": [
                {"required": ["decision"], "properties": {"decision": {"const": "vote"}}},
                {"required": ["coordinator"], "properties": {"coordinator": agent}},
            ],
        },
    }

    def spec_of(pattern: str) -> dict[str, Any]:
        rule = rules[pattern]
        extra: dict[str, Any] = {
            "type": "object",
            "required": ["pattern", *rule.get("required", [])],
            "properties": {"pattern": {"const": pattern}, **rule.get("properties", {})},
        }
        if "anyOf" in rule:
            extra["anyOf"] = rule["anyOf"]
        return {"allOf": [{"$ref": REF + "SwarmSpec"}, extra]}

    def variant(title: str, key: str, value: dict[str, Any], sg: bool) -> dict[str, Any]:
        other = "spec" if key == "swarm" else "swarm"
        return {
            "title": title,
            "type": "object",
            "additionalProperties": False,
            "required": [key, "input"],
            "properties": {
                key: value,
                other: {"type": "null"},
                "input": {"$ref": REF + ("RunInputScatterGather" if sg else "RunInput")},
                "run_id": run_id,
            },
        }

    by_kind: dict[bool, list[str]] = {True: [], False: []}
    for name, s in sorted(specs.specs.items()):
        by_kind[s.pattern == "scatter_gather"].append(name)
    variants = []
    for sg, names in by_kind.items():
        if names:
            title = "named scatter_gather swarm" if sg else "named swarm"
            variants.append(variant(title, "swarm", {"type": "string", "enum": names}, sg))
    for pattern in rules:
        variants.append(
            variant(f"inline {pattern} spec", "spec", spec_of(pattern), pattern == "scatter_gather")
        )
    schemas["StartRun"] = {
        "title": "StartRun",
        "description": start.get("description", ""),
        "oneOf": variants,
        "examples": [
            {"swarm": "scatter_gather", "input": {"task": "Plan a product launch", "agents": 3}},
            {
                "spec": {
                    "name": "calc-then-write",
                    "pattern": "pipeline",
                    "agents": [
                        {"name": "mathlete", "role": "You compute.", "tools": ["calculator"]},
                        {"name": "writer", "role": "You explain results."},
                    ],
                },
                "input": {"task": "What is 6*7, and why does it matter?", "user": "alice"},
            },
        ],
    }
