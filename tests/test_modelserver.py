"""The local model server speaks the Chat Completions protocol, answers
deterministically, injects faults, and logs every answered request."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient

from swarmd.devstack.modelserver import ModelServer


def chat(c: TestClient, model: str = "mock-a", content: str = "hello", **kw: object) -> object:
    return c.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": content}], **kw},
    )


def test_answers_are_deterministic_and_logged(tmp_path: Path) -> None:
    log = tmp_path / "req.jsonl"
    c = TestClient(ModelServer(log).app())
    a, b = chat(c).json(), chat(c).json()  # type: ignore[attr-defined]
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert a["usage"]["total_tokens"] > 0
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and '"status":200' in lines[0] and "messages_sha256" in lines[0]


def test_planner_prompt_gets_exactly_n_lines(tmp_path: Path) -> None:
    c = TestClient(ModelServer(None).app())
    r = c.post(
        "/v1/chat/completions",
        json={
            "model": "mock-a",
            "messages": [
                {"role": "system", "content": "Split the task into exactly 7 subtasks."},
                {"role": "user", "content": "survey bees"},
            ],
        },
    )
    lines = r.json()["choices"][0]["message"]["content"].splitlines()
    assert [ln.split(".")[0] for ln in lines] == [str(i) for i in range(1, 8)]


def test_fault_injection_429_then_recovery(tmp_path: Path) -> None:
    server = ModelServer(tmp_path / "req.jsonl")
    c = TestClient(server.app())
    r = c.put("/_control/faults", json=[{"model": "mock-a", "status": 429, "count": 2}])
    assert r.status_code == 200
    codes = [chat(c).status_code for _ in range(3)]  # type: ignore[attr-defined]
    assert codes == [429, 429, 200]
    assert chat(c, model="mock-b").status_code == 200  # type: ignore[attr-defined]
    statuses = [e["status"] for e in c.get("/_control/log").json()]
    assert statuses == [429, 429, 200, 200]


def test_a_fault_can_single_out_requests_by_their_text() -> None:
    # tests slow down or fail one call among concurrent ones by what it asks
    c = TestClient(ModelServer(None).app())
    r = c.put("/_control/faults", json=[{"model": "*", "contains": "part 3 of 3", "status": 500}])
    assert r.status_code == 200 and r.json()[0]["contains"] == "part 3 of 3"
    assert chat(c, content="summarise part 2 of 3").status_code == 200  # type: ignore[attr-defined]
    assert chat(c, content="summarise part 3 of 3").status_code == 500  # type: ignore[attr-defined]


def test_a_fault_scoped_to_one_user_leaves_other_callers_alone() -> None:
    # a stack test's outage hits its own run, never a call still made for another test
    c = TestClient(ModelServer(None).app())
    r = c.put("/_control/faults", json=[{"model": "*", "user": "t-out", "status": 503}])
    assert r.status_code == 200 and r.json()[0]["user"] == "t-out"
    assert chat(c, user="t-other").status_code == 200  # type: ignore[attr-defined]
    assert chat(c).status_code == 200  # type: ignore[attr-defined]
    assert chat(c, user="t-out").status_code == 503  # type: ignore[attr-defined]


def test_tool_call_round_trip() -> None:
    c = TestClient(ModelServer(None).app())
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {}}}]
    msgs = [{"role": "user", "content": 'use tool calculator with {"expression": "2+3"}'}]
    first = c.post(
        "/v1/chat/completions", json={"model": "m", "messages": msgs, "tools": tools}
    ).json()
    call = first["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "calculator"
    msgs += [
        first["choices"][0]["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": '{"result": 5}'},
    ]
    second = c.post(
        "/v1/chat/completions", json={"model": "m", "messages": msgs, "tools": tools}
    ).json()
    assert "5" in second["choices"][0]["message"]["content"]


def test_bad_request_names_the_field() -> None:
    c = TestClient(ModelServer(None).app())
    r = c.post("/v1/chat/completions", json={"model": "m"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_tool_directive_arguments_may_hold_braces() -> None:
    from swarmd.devstack.modelserver import tool_directive

    code = {"code": "d = {'a': {'b': 1}}\nprint(d)"}
    text = f"please use tool python with {json.dumps(code)} and report"
    name, args = tool_directive(text) or ("", "")
    assert name == "python" and json.loads(args) == code
    assert tool_directive("use tool python with {not json}") is None
