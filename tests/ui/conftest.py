"""Real headless Chromium (Debian's ``chromium``, installed by scripts/setup_chromium.sh)
driven by Playwright. Playwright's own browser download cannot work on our machines,
so it launches the system binary through ``executable_path``. Screenshots go to
``test-artifacts/ui/`` (gitignored)."""

from __future__ import annotations

import os
import shutil
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


def login(page: Page, stack: Stack, hash_: str = "#/runs") -> None:
    """Open the viewer and paste the token once, as a user does."""
    page.goto(f"/ui/{hash_}")
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
