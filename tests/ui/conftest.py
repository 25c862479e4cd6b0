"""Real headless Chromium (Debian's ``chromium``, installed by scripts/setup_chromium.sh)
driven by Playwright. Playwright's own browser download cannot work on our machines,
so it launches the system binary through ``executable_path``. Screenshots go to
``test-artifacts/ui/`` (gitignored)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from swarmd.devstack.launcher import Stack
from tests.conftest import ROOT

ARTIFACTS = Path(os.environ.get("SWARMD_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"


def chromium_path() -> str:
    found = os.environ.get("SWARMD_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("no chromium on PATH: run `make chromium` (scripts/setup_chromium.sh)")
    return found


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(
        executable_path=chromium_path(),
        headless=True,
        # root in a container: no user namespaces for the sandbox; small /dev/shm
        args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    )
    yield b
    b.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=stack.api_url)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    ctx.close()
    assert not errors, f"the page raised: {errors}"


def login(page: Page, stack: Stack, hash_: str = "#/runs", base: str = "") -> None:
    """Open the viewer (at ``base``, default the app) and paste the token once, as a user does."""
    page.goto(f"{base}/ui/{hash_}")
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    page.fill("#token-input", stack.api_token)
    page.click("#token-save")
    expect(dialog).to_be_hidden()


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


class DroppingProxy:
    """A TCP proxy in front of the app that can cut every open connection at once: a
    real network drop, mid-stream, for the page's reconnect (a browser's offline mode
    leaves an open stream alone)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        loop = self.loop
        server = loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()  # until close()
        server.close()
        self._cut()
        tasks = asyncio.all_tasks(loop)
        for t in tasks:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers |= {w, uw}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
                self.writers.discard(dst)

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    def drop(self) -> None:
        """Reset every connection open now (new ones still go through)."""

        self.loop.call_soon_threadsafe(self._cut)

    def _cut(self) -> None:
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def proxy(stack: Stack) -> Iterator[DroppingProxy]:
    p = DroppingProxy(stack.ports.app)
    yield p
    p.close()
