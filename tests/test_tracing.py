"""The shape of a run's trace, from spans captured in memory.

The app runs in this process (``create_app`` served by uvicorn in a thread) with
an in-memory span exporter, beside its own real daprd, placement, scheduler and
Redis; its LLM calls go through the session stack's real LiteLLM proxy to the
model server. Nothing of ours is mocked: the spans are the ones the API, the
workflow worker and the activities record for a real run.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from swarmd import telemetry
from swarmd.api.app import create_app
from swarmd.config import Settings
from swarmd.devstack.launcher import Ports, Stack
from swarmd.logs import JsonFormatter
from tests.conftest import TEST_OFFSET, wait_run, wait_until

pytestmark = pytest.mark.integration


class TracedApp:
    def __init__(self, url: str, token: str, exporter: InMemorySpanExporter) -> None:
        self.url = url
        self.token = token
        self.exporter = exporter

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture(scope="module")
def traced_app(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedApp]:
    side = Stack(
        data_dir=tmp_path_factory.mktemp("traced"),
        ports=Ports.for_tests(TEST_OFFSET + 300),  # a block of its own beside the session stack
        app_mode="direct",
    )
    side.check_ports()
    side.app_dir.mkdir(parents=True, exist_ok=True)
    exporter = InMemorySpanExporter()
    provider = telemetry.tracer_provider(processor=SimpleSpanProcessor(exporter))
    settings = Settings(
        port=side.ports.app,
        api_token=side.api_token,
        llm_base_url=f"http://127.0.0.1:{stack.ports.litellm}/v1",
        llm_api_key=stack.gateway_key,
        data_dir=side.data_dir,
        trace_export="none",
        tracker_interval_s=0.5,
        DAPR_HTTP_PORT=side.ports.dapr_http,
        DAPR_GRPC_PORT=side.ports.dapr_grpc,
        POD_NAME="traced-app",
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, tracer_provider=provider),
            host="127.0.0.1",
            port=side.ports.app,
            log_config=None,
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, name="traced-app", daemon=True)
    try:
        side.start_redis()
        side.start_control_plane()
        side.start_daprd()
        thread.start()
        with httpx.Client(timeout=2) as c:
            wait_until(
                lambda: _ok(c, f"{side.api_url}/readyz"), timeout_s=120, what="traced app ready"
            )
        yield TracedApp(side.api_url, side.api_token, exporter)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        side.stop()
        provider.shutdown()


def _ok(c: httpx.Client, url: str) -> bool:
    try:
        return c.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def test_one_trace_per_run_root_agents_llm_calls(traced_app: TracedApp) -> None:
    with traced_app.client() as api:
        r = api.post(
            "/v1/runs",
            json={
                "swarm": "scatter_gather",
                "input": {"task": "Trace this run end to end", "agents": 3, "user": "tracy"},
            },
        )
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        view = wait_run(api, run_id, timeout_s=120)
    assert view["status"] == "completed", view

    def run_span() -> ReadableSpan | None:
        return next(
            (
                s
                for s in traced_app.spans()
                if s.name == "swarmd.run scatter_gather"
                and (s.attributes or {}).get("swarmd.run_id") == run_id
            ),
            None,
        )

    run = wait_until(run_span, timeout_s=30, what="the run span (recorded when the run ends)")
    trace_id = run.context.trace_id
    spans = [s for s in traced_app.spans() if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in spans}

    # one root per run: the HTTP request that started it
    roots = [s for s in spans if s.parent is None]
    assert [(s.name, s.kind) for s in roots] == [("POST /v1/runs", SpanKind.SERVER)]
    (root,) = roots
    assert run.parent is not None and run.parent.span_id == root.context.span_id
    assert run.attributes["swarmd.run.status"] == "completed"
    assert run.start_time <= run.end_time

    # a span per agent, children of the run
    agents = sorted((s for s in spans if s.name.startswith("swarmd.agent ")), key=lambda s: s.name)
    assert [s.name for s in agents] == [f"swarmd.agent agent-{i}" for i in (1, 2, 3)]
    assert all(s.parent.span_id == run.context.span_id for s in agents)  # type: ignore[union-attr]

    # a span per LLM call: planner and reducer under the run, each agent's under it
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == view["usage"]["calls"] == 5
    parent_of = {
        (s.attributes or {})["swarmd.agent"]: by_id[s.parent.span_id].name  # type: ignore[union-attr]
        for s in chats
    }
    assert parent_of == {
        "planner": "swarmd.run scatter_gather",
        "reducer": "swarmd.run scatter_gather",
        **{f"agent-{i}": f"swarmd.agent agent-{i}" for i in (1, 2, 3)},
    }
    for s in chats:
        a: dict[str, Any] = dict(s.attributes or {})
        assert s.kind == SpanKind.CLIENT
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] in ("swarmd-fast", "swarmd-smart")
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["swarmd.run_id"] == run_id and a["enduser.id"] == "tracy"
    # the token attributes add up to the run's usage
    assert (
        sum(s.attributes["gen_ai.usage.input_tokens"] for s in chats)
        == (  # type: ignore[index]
            view["usage"]["prompt_tokens"]
        )
    )
    assert run.attributes["gen_ai.usage.output_tokens"] == view["usage"]["completion_tokens"]
    # an agent span covers its LLM call
    for ag in agents:
        mine = [s for s in chats if s.parent.span_id == ag.context.span_id]  # type: ignore[union-attr]
        assert (
            len(mine) == 1
            and ag.attributes["gen_ai.usage.input_tokens"]
            == (
                mine[0].attributes["gen_ai.usage.input_tokens"]  # type: ignore[index]
            )
        )
    print(f"trace {trace_id:032x}: {len(spans)} spans")


def test_status_reads_are_their_own_traces(traced_app: TracedApp) -> None:
    with traced_app.client() as api:
        r = api.get(
            "/v1/runs/no-such-run",
            headers={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"},
        )
    assert r.status_code == 404
    span = wait_until(
        lambda: next(
            (s for s in traced_app.spans() if s.context.trace_id == int("ab" * 16, 16)), None
        ),
        timeout_s=10,
        what="the request span",
    )
    # the caller's trace is continued, the span is named after the route
    assert span.name == "GET /v1/runs/{run_id}" and span.parent.span_id == int("cd" * 8, 16)  # type: ignore[union-attr]
    assert span.attributes["http.response.status_code"] == 404


def test_json_logs_carry_run_and_trace_ids() -> None:
    exporter = InMemorySpanExporter()
    provider = telemetry.tracer_provider(processor=SimpleSpanProcessor(exporter))
    record = logging.LogRecord("swarmd.test", logging.INFO, __file__, 1, "step done", None, None)
    with (
        telemetry.run_scope("run-42"),
        provider.get_tracer("test").start_as_current_span("step") as span,
    ):
        line = json.loads(JsonFormatter().format(record))
    assert line["run_id"] == "run-42"
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    outside = json.loads(JsonFormatter().format(record))
    assert "run_id" not in outside and "trace_id" not in outside
