"""How a gateway guardrail's refusal is classified (the real proxy's answer shape is
exercised in tests/integration/test_guardrails.py)."""

from __future__ import annotations

import httpx
import openai

from swarmd.activities.llm import classify, error_reason
from swarmd.engine.retry import NON_RETRYABLE
from swarmd.errors import GuardrailBlocked, NonRetryableActivityError


def _bad_request(body: object) -> openai.BadRequestError:
    req = httpx.Request("POST", "http://gw/v1/chat/completions")
    return openai.BadRequestError("blocked", response=httpx.Response(400, request=req), body=body)


def test_a_guardrail_block_is_a_non_retryable_guardrail_error_naming_it() -> None:
    exc = _bad_request(
        {
            "message": "Content blocked: keyword 'x' detected",
            "provider_specific_fields": {
                "error": "Content blocked: keyword 'x' detected",
                "guardrail_name": "injection-filter-tool-results",
            },
        }
    )
    err = classify(exc)
    assert isinstance(err, GuardrailBlocked)
    assert err.message == "injection-filter-tool-results: Content blocked: keyword 'x' detected"
    assert type(err).__name__ in NON_RETRYABLE
    assert error_reason(exc) == "guardrail"


def test_other_bad_requests_stay_plain_non_retryable_errors() -> None:
    err = classify(_bad_request({"message": "unknown model"}))
    assert type(err) is NonRetryableActivityError
    assert error_reason(_bad_request(None)) == "400"
