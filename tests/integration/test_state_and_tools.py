"""Two fixed bugs, on the real stack: the ``http_get`` tool reaches an allow-listed
host (SWARMD_HTTP_GET_ALLOWED_HOSTS), and purging a run deletes its payload blobs
and its key index, proven by reading every key back from the sidecar."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from swarmd.devstack.launcher import Stack
from swarmd.engine.runkeys import SHARDS, shard_key
from tests.conftest import wait_run

pytestmark = pytest.mark.integration


class _Site(BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        body = f"hello from the allowed host, you asked for {self.path}".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[tuple[int, list[str]]]:
    """A real HTTP server on 127.0.0.1 (the stack allows that host for http_get)."""
    _Site.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server.server_address[1], _Site.paths
    finally:
        server.shutdown()
        server.server_close()


def _tool_run(api: httpx.Client, run_id: str, url: str) -> dict[str, Any]:
    spec = {
        "name": "fetcher",
        "pattern": "pipeline",
        "agents": [{"name": "reader", "role": "You read pages.", "tools": ["http_get"]}],
    }
    task = "use tool http_get with " + json.dumps({"url": url})
    r = api.post("/v1/runs", json={"spec": spec, "run_id": run_id, "input": {"task": task}})
    assert r.status_code == 202, r.text
    view = wait_run(api, run_id)
    assert view["status"] == "completed", view
    (agent,) = view["output"]["agent_results"]
    return dict(agent)


def test_http_get_fetches_an_allowed_host(api: httpx.Client, site: Any) -> None:
    port, paths = site
    agent = _tool_run(api, "http-get-allowed", f"http://127.0.0.1:{port}/briefing?id=7")
    assert paths == ["/briefing?id=7"]  # the tool really fetched it, once
    assert agent["status"] == "answered" and agent["turns"] == 2
    assert "hello from the allowed host" in agent["content"]
    assert '\\"status\\": 200' in agent["content"] or '"status": 200' in agent["content"]


def test_http_get_refuses_a_host_not_on_the_list(api: httpx.Client, site: Any) -> None:
    port, paths = site
    agent = _tool_run(api, "http-get-refused", f"http://localhost:{port}/secret")
    assert paths == []  # never contacted
    assert "not on the allow-list" in agent["content"]


def _state(stack: Stack, key: str) -> httpx.Response:
    r = httpx.get(
        f"http://127.0.0.1:{stack.ports.dapr_http}/v1.0/state/statestore/{quote(key, safe='')}"
    )
    assert r.status_code in (200, 204), r.text
    return r


def test_purge_deletes_the_runs_payload_blobs(stack: Stack, api: httpx.Client) -> None:
    run_id = "purge-payloads"
    r = api.post(
        "/v1/runs",
        json={
            "swarm": "pipeline",
            "run_id": run_id,
            "input": {"task": "Write it all down, answer in 300 kilobytes"},
        },
    )
    assert r.status_code == 202, r.text
    view = wait_run(api, run_id)
    assert view["status"] == "completed", view
    assert all(len(a["content"]) == 300 * 1024 for a in view["output"]["agent_results"])
    raw = httpx.get(f"http://127.0.0.1:{stack.ports.dapr_http}/v1.0/workflows/dapr/{run_id}")
    blobs = set(re.findall(r"\[\[swarmd-ref:(payload\|[^\]]+)\]\]", raw.text))
    assert blobs, "the answers should have travelled by reference"
    indexes = [shard_key(run_id, i) for i in range(SHARDS)]
    listed = {k for key in indexes if (rec := _state(stack, key)).content for k in rec.json()}
    assert blobs <= listed  # every blob is in the run's key index ...
    for key in blobs:
        blob = _state(stack, key)
        assert len(blob.json()) == 300 * 1024
        assert blob.headers.get("metadata.ttlexpiretime"), blob.headers  # ... and has a TTL

    assert api.delete(f"/v1/runs/{run_id}").status_code == 204
    assert api.get(f"/v1/runs/{run_id}").status_code == 404
    left = [k for k in [*listed, *indexes] if _state(stack, k).content]
    assert left == []
