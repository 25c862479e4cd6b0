"""The run viewer in real headless Chromium against the real stack: the runs list,
a run's timeline, approving a gated run, live progress, and a big run's page.
Screenshots of each page land in test-artifacts/ui/."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from swarmd.devstack.launcher import Stack
from tests.conftest import wait_run
from tests.integration.test_run_control import get, slow_models, start, start_gated
from tests.integration.test_user_agents import provision, reply, send, uid
from tests.ui.conftest import DroppingProxy, login, shot

pytestmark = pytest.mark.integration


def fmt_int(n: int) -> str:
    return f"{n:,}"


def tokens(u: dict[str, Any]) -> int:
    return int(u["prompt_tokens"]) + int(u["completion_tokens"])


def timeline_names(page: Page) -> dict[str, str]:
    """name -> tokens cell of every row, scrolling the virtualised list through."""
    seen: dict[str, str] = {}
    vlist = page.locator("#timeline .vlist")
    height = vlist.evaluate("el => el.scrollHeight")
    top = 0
    while True:
        vlist.evaluate(f"el => {{ el.scrollTop = {top}; el.dispatchEvent(new Event('scroll')); }}")
        for row in page.locator("#timeline .vrow:not([hidden])").all():
            cells = row.locator("span").all_inner_texts()
            seen[cells[0]] = cells[-3]  # name ... tokens, cost, took
        top += 300
        if top > height:
            return seen


@pytest.fixture(scope="module")
def run20(stack: Stack) -> dict[str, Any]:
    """A finished 20-agent scatter-gather (its final view), shared by the tests below."""
    headers = {"Authorization": f"Bearer {stack.api_token}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api:
        run_id = start(api, "Write a launch plan in twenty parts", 20, 8, user="t-ui20")
        view = wait_run(api, run_id)
    assert view["status"] == "completed", view
    return view


def test_a_finished_20_agent_runs_page_shows_20_agents_with_tokens(
    page: Page, stack: Stack, run20: dict[str, Any]
) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    view, run_id = run20, run20["run_id"]
    login(page, stack, f"#/runs/{run_id}")
    summary = page.locator("#timeline-summary")
    expect(summary).to_contain_text("20 agents")
    expect(summary).to_contain_text("20 answered")
    expect(page.locator("#run-progress")).to_contain_text("20 of 20 agents done")
    expect(page.locator("#run-tokens")).to_have_text(fmt_int(tokens(view["usage"])))
    expect(page.locator("#run-answer pre")).to_contain_text(view["output"]["answer"][:40])
    names = timeline_names(page)
    agents = {n: t for n, t in names.items() if n.startswith("agent-")}
    assert sorted(agents) == sorted(f"agent-{i}" for i in range(1, 21)), names
    for name, cell in agents.items():
        assert int(cell.replace(",", "")) > 0, (name, cell)
    by_agent = {r["agent"]: tokens(r["usage"]) for r in view["output"]["agent_results"]}
    assert {n: int(t.replace(",", "")) for n, t in agents.items()} == by_agent

    # an agent's output is fetched when its row is clicked
    page.locator("#timeline .vlist").evaluate("el => { el.scrollTop = 0; }")
    page.locator("#timeline .vrow .c-name").get_by_text("agent-1", exact=True).click()
    detail = page.locator("#agent-detail")
    expect(detail).to_be_visible()
    first = next(r for r in view["output"]["agent_results"] if r["agent"] == "agent-1")
    expect(detail.locator("pre")).to_contain_text(first["content"][:30])
    expect(page.locator("#stream-state")).to_have_text("ended")
    shot(page, "run-page")
    assert not [u for u in requested if stack.api_token in u], "the token went into a URL"


def test_the_runs_list_shows_a_finished_20_agent_run_with_its_cost(
    page: Page, stack: Stack, run20: dict[str, Any]
) -> None:
    view, run_id = run20, run20["run_id"]
    login(page, stack, "#/runs")
    page.fill("#run-filters input[name=user]", "t-ui20")  # the filter form, as a user would
    page.select_option("#run-filters select[name=status]", "completed")
    page.click("#run-filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"#/runs\?status=completed&user=t-ui20$"))
    row = page.locator(f'#runs-body tr[data-run="{run_id}"]')
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("completed")
    expect(row.locator(".bar-label")).to_contain_text("20/20")
    expect(row.locator('[data-field="tokens"]')).to_have_text(fmt_int(tokens(view["usage"])))
    cost = view["usage"]["cost_usd"]
    expect(row.locator('[data-field="cost"]')).to_have_text(
        "$0" if cost == 0 else re.compile(r"^\$0?\.\d+")
    )
    assert page.locator("#runs-body tr").count() == 1  # only that user's runs
    shot(page, "runs-list")
    row.locator("a").click()
    expect(page).to_have_url(re.compile(f"#/runs/{run_id}$"))
    expect(page.locator("#timeline-summary")).to_contain_text("20 agents")


def test_clicking_approve_releases_a_gated_run(page: Page, stack: Stack, api: httpx.Client) -> None:
    run_id = start_gated(api, "gated-ui", "Draft the memo")
    login(page, stack, f"#/runs/{run_id}")
    expect(page.locator("#run-phase")).to_have_text("awaiting_approval")
    approve = page.locator("#act-approve")
    expect(approve).to_be_enabled()
    expect(approve).to_have_class(re.compile("attention"))

    approve.click()  # cancelling the confirmation sends nothing
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.click("#confirm-cancel")
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    assert get(api, run_id)["status"] == "running"

    approve.click()
    expect(page.locator("#confirm-title")).to_have_text("Approve this run?")
    shot(page, "approve-confirm")
    page.click("#confirm-ok")
    expect(page.locator(".run-head .badge").first).to_have_text("completed", timeout=60_000)
    view = wait_run(api, run_id)
    assert view["status"] == "completed" and view["output"]["approved"] is True, view
    expect(page.locator("#act-approve")).to_be_disabled()
    expect(page.locator("#act-purge")).to_be_enabled()


def click_action(page: Page, action: str, title: str) -> None:
    page.click(f"#act-{action}")
    expect(page.locator("#confirm-title")).to_have_text(title)
    page.click("#confirm-ok")


def test_pause_resume_terminate_and_purge_buttons_steer_a_run(
    page: Page, stack: Stack, api: httpx.Client, model_server: httpx.Client
) -> None:
    slow_models(model_server, 500)
    run_id = start(api, "Steer me from the browser", agents=6, max_parallel=1, user="t-ui-steer")
    login(page, stack, f"#/runs/{run_id}")
    badge = page.locator(".run-head .badge").first
    expect(page.locator("#act-pause")).to_be_enabled(timeout=60_000)
    expect(page.locator("#act-purge")).to_be_disabled()  # only a finished run purges

    click_action(page, "pause", "Pause this run?")
    expect(badge).to_have_text("suspended", timeout=30_000)
    assert get(api, run_id)["status"] == "suspended"
    expect(page.locator("#act-resume")).to_be_enabled()
    expect(page.locator("#act-pause")).to_be_disabled()

    click_action(page, "resume", "Resume this run?")
    expect(badge).to_have_text("running", timeout=30_000)

    click_action(page, "terminate", "Terminate this run?")
    expect(badge).to_have_text("terminated", timeout=30_000)
    assert wait_run(api, run_id)["status"] == "terminated"
    expect(page.locator("#act-terminate")).to_be_disabled()

    click_action(page, "purge", "Purge this run?")
    expect(page).to_have_url(re.compile(r"#/runs$"))
    assert api.get(f"/v1/runs/{run_id}").status_code == 404


def test_a_live_runs_progress_advances_without_reload_and_survives_a_network_drop(
    page: Page, stack: Stack, api: httpx.Client, model_server: httpx.Client, proxy: DroppingProxy
) -> None:
    slow_models(model_server, 600)
    run_id = start(api, "Take your time", agents=6, max_parallel=1, user="t-ui-live")
    streams: list[dict[str, str]] = []
    page.on("request", lambda r: streams.append(r.headers) if r.url.endswith("/stream") else None)
    login(page, stack, f"#/runs/{run_id}", base=proxy.url)  # through a proxy we can cut
    page.evaluate("window.__sameDocument = true")
    progress = page.locator("#run-progress")
    expect(progress).to_contain_text(re.compile(r"[0-5] of 6 agents done"), timeout=60_000)
    before = int(progress.inner_text().split()[0])
    expect(page.locator("#timeline-summary")).to_contain_text("running", timeout=30_000)
    shot(page, "run-live")
    page.wait_for_function(  # the same document, updated by the stream
        "n => parseInt(document.querySelector('#run-progress .bar-label').textContent) > n",
        arg=before,
        timeout=60_000,
    )
    # the network drops mid-run: the page reconnects and resumes after its last event
    resumes = lambda r: r.url.endswith("/stream") and "last-event-id" in r.headers  # noqa: E731
    with page.expect_request(resumes, timeout=30_000):
        proxy.drop()
    expect(page.locator(".run-head .badge").first).to_have_text("completed", timeout=120_000)
    expect(progress).to_contain_text("6 of 6 agents done")
    expect(page.locator("#timeline-summary")).to_contain_text("6 answered")
    assert page.evaluate("window.__sameDocument") is True  # never reloaded
    events = page.locator("#event-log li .ev-kind").all_inner_texts()
    assert events[0] == "end" and events.count("progress") >= 6, events
    resumed = [h for h in streams if "last-event-id" in h]
    assert resumed and resumed[0]["last-event-id"].isdigit(), streams
    assert all("authorization" in h for h in streams)  # the token only ever in a header
    ids = [int(i.lstrip("#")) for i in page.locator("#event-log li .ev-id").all_inner_texts() if i]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)  # no repeats
    assert page.evaluate("import('/ui/ticker.js').then(m => m.timerCount())") == 1


def test_a_big_runs_page_keeps_a_window_of_rows_in_the_dom(
    page: Page, stack: Stack, api: httpx.Client
) -> None:
    run_id = start(api, "Many hands", agents=100, max_parallel=50, user="t-ui-big")
    assert wait_run(api, run_id)["status"] == "completed"
    login(page, stack, f"#/runs/{run_id}")
    expect(page.locator("#timeline-summary")).to_contain_text("100 agents")
    rows = page.locator("#timeline .vrow")
    assert rows.count() <= 40, rows.count()  # 18 in view plus overscan, not 102
    page.locator("#timeline .vlist").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    expect(page.locator("#timeline .vrow:not([hidden])", has_text="reducer")).to_be_visible()
    assert rows.count() <= 40, rows.count()
    shot(page, "run-big")


def test_the_agents_pages_show_a_users_inbox_replies_schedules_and_usage(
    page: Page, stack: Stack, api: httpx.Client
) -> None:
    user = uid("ui-agent")
    provision(api, user, "analyst")
    first = reply(api, user, send(api, user, "Summarise the week"))
    assert first["status"] == "answered", first
    r = api.post(
        f"/v1/agents/{user}/schedules", json={"prompt": "Daily digest", "daily_at": "07:30"}
    )
    assert r.status_code == 201, r.text

    login(page, stack, "#/agents")
    row = page.locator(f'#agents-body tr[data-user="{user}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("analyst")
    row.locator("a").click()
    expect(page).to_have_url(re.compile(f"#/agents/{user}$"))
    inbox = page.locator("#inbox-body")
    expect(inbox.locator('tr[data-seq="1"]')).to_contain_text("Summarise the week")
    expect(inbox.locator('tr[data-seq="1"] .reply')).to_contain_text(first["reply"][:30])
    expect(page.locator("#schedules-body")).to_contain_text("daily at 07:30 UTC")
    expect(page.locator("#agent-usage")).to_contain_text(
        f"{fmt_int(first['usage']['tokens'])} tokens"
    )

    # a message sent from the page is answered there, without a reload
    page.fill(".send textarea", "And the risks?")
    page.click(".send button[type=submit]")
    second = inbox.locator('tr[data-seq="2"]')
    expect(second).to_contain_text("And the risks?")
    expect(second.locator(".badge")).to_have_text("answered", timeout=60_000)
    shot(page, "agent-page")
