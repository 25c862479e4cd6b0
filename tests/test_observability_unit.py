"""Pure pieces of the observability code: ids, carriers, header parsing, usage sums.
(Their behaviour end to end is in tests/test_tracing.py and tests/integration.)"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import openai
from dapr.ext.workflow import WorkflowStatus
from opentelemetry.trace import SpanContext, TraceFlags

from swarmd import telemetry
from swarmd.activities.llm import error_reason, header_number
from swarmd.engine.models import Usage
from swarmd.engine.tracker import _outcome, user_key


def test_span_ids_are_deterministic_and_distinct() -> None:
    a = telemetry.span_id_for("run", "r1")
    assert a == telemetry.span_id_for("run", "r1") != telemetry.span_id_for("run", "r2")
    assert telemetry.span_id_for("agent", "r1") != a
    assert 0 < a < 2**64


def test_run_context_continues_the_callers_trace() -> None:
    http = SpanContext(0xAB, 0xCD, is_remote=False, trace_flags=TraceFlags(1))
    run = telemetry.run_span_context("r1", http)
    assert run.trace_id == 0xAB and run.span_id == telemetry.span_id_for("run", "r1")
    assert telemetry.parse_traceparent(telemetry.traceparent(run)) == SpanContext(
        0xAB, run.span_id, is_remote=True, trace_flags=TraceFlags(1)
    )
    fresh = telemetry.run_span_context("r1", None)
    assert fresh.trace_id != 0 and fresh.span_id == run.span_id


def test_step_parent_is_the_agent_for_agent_loops_and_the_run_otherwise() -> None:
    run = telemetry.run_span_context("r1", None)
    carrier = telemetry.traceparent(run)
    agent = telemetry.step_parent(carrier, "r1", "r1.agent-3")
    assert agent is not None and agent.trace_id == run.trace_id
    assert agent.span_id == telemetry.span_id_for("agent", "r1.agent-3")
    own = telemetry.step_parent(carrier, "r1", "r1")
    assert own is not None and own.span_id == run.span_id
    assert telemetry.step_parent(None, "r1", "r1.agent-3") is None
    assert telemetry.step_parent("garbage", "r1", "r1") is None


def test_start_call_carries_the_runs_traceparent() -> None:
    tp = telemetry.traceparent(telemetry.run_span_context("r1", None))
    req = SimpleNamespace(input=SimpleNamespace(value=json.dumps({"run_id": "r1", "trace": tp})))
    path = "/TaskHubSidecarService/StartInstance"
    assert telemetry._start_traceparent(path, req) == tp
    assert telemetry._start_traceparent("/TaskHubSidecarService/GetInstance", req) is None
    no_trace = SimpleNamespace(input=SimpleNamespace(value=json.dumps({"run_id": "r1"})))
    assert telemetry._start_traceparent(path, no_trace) is None


def test_gateway_headers_parse_to_numbers() -> None:
    headers = httpx.Headers(
        {"x-litellm-response-cost": "0.00042", "x-litellm-attempted-retries": ""}
    )
    assert header_number(headers, "x-litellm-response-cost") == 0.00042
    assert header_number(headers, "x-litellm-attempted-retries") == 0
    assert header_number(headers, "x-litellm-attempted-fallbacks") == 0
    assert (
        header_number(httpx.Headers({"x-litellm-response-cost": "n/a"}), "x-litellm-response-cost")
        == 0
    )


def test_error_reasons_are_low_cardinality() -> None:
    req = httpx.Request("POST", "http://gw/v1/chat/completions")
    rate = openai.RateLimitError("slow down", response=httpx.Response(429, request=req), body=None)
    assert error_reason(rate) == "429"
    assert error_reason(openai.APITimeoutError(request=req)) == "timeout"
    assert error_reason(openai.APIConnectionError(request=req)) == "connection"


def test_usage_sums_cost() -> None:
    total = Usage(prompt_tokens=1, cost_usd=0.1).add(Usage(completion_tokens=2, cost_usd=0.2))
    assert total == Usage(prompt_tokens=1, completion_tokens=2, cost_usd=0.3)
    assert (
        Usage.model_validate({"prompt_tokens": 1, "completion_tokens": 0, "calls": 1}).cost_usd == 0
    )


def test_ended_run_outcome_reads_output_or_last_progress() -> None:
    done = SimpleNamespace(
        runtime_status=WorkflowStatus.COMPLETED,
        serialized_output=json.dumps(
            {
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "calls": 2},
                "stop_reason": "token_budget",
            }
        ),
        serialized_custom_status=None,
    )
    out = _outcome(done)  # type: ignore[arg-type]
    assert out == {
        "usage": Usage(prompt_tokens=5, completion_tokens=1, calls=2),
        "stop_reason": "token_budget",
    }
    killed = SimpleNamespace(
        runtime_status=WorkflowStatus.TERMINATED,
        serialized_output=None,
        serialized_custom_status=json.dumps({"phase": "agents", "usage": {"prompt_tokens": 3}}),
    )
    assert _outcome(killed)["usage"].prompt_tokens == 3  # type: ignore[arg-type,index]
    assert _outcome(None) is None


def test_user_keys_are_safe_state_keys() -> None:
    k = user_key("alice||bob")
    assert "||" not in k and k == user_key("alice||bob") != user_key("alice")
