"""The UI in a real browser (issue 22): the sessions list shows what each session cost and sorts by
it, the session and call pages show the cost, the session page's Stop button (after a confirmation)
stops the session through the admin API and Resume lifts it, and the agents page lists costs.

The behaviour itself is tested through the SDKs (tests/proxy/test_cost.py, test_kill_switch.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from playwright.sync_api import expect

from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running, run_interlock, settings_for_test
from tests.conftest import routes_for
from tests.proxy.routing_support import wait_for


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("ui-cost")
    with ScriptedUpstream() as upstream:
        data = {"routes": routes_for(upstream), "shutdown_grace": 2}
        with run_interlock(settings_for_test(data, tmp)) as running:
            # "dear" costs more than "cheap", which is the most recently active.
            upstream.script(Script(input_tokens=500_000, output_tokens=1000), Script(input_tokens=10, output_tokens=2))
            for session in ("dear", "cheap"):
                with openai.OpenAI(
                    base_url=running.url + "/openai",
                    api_key="sk-agent",
                    max_retries=0,
                    default_headers={"X-Interlock-Session": session, "X-Interlock-Agent": "coder"},
                ) as client:
                    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            store = running.runtime.store
            wait_for(lambda: len(store.list_calls()) >= 2)
            yield running


@pytest.fixture(scope="module")
def page(browser: Any, running: Running) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=running.admin_url)
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    context.close()


def test_sessions_show_their_cost_and_sort_by_it(page: Any, running: Running) -> None:
    dear = running.runtime.store.session_summary("dear")["cost_usd"]
    page.goto("/")
    rows = page.locator("table.sessions tbody tr")
    expect(rows.first.locator(".session-link")).to_have_text("cheap")  # most recent first
    page.locator("#sort-cost").click()
    expect(page).to_have_url("/?order=cost")
    expect(rows.first.locator(".session-link")).to_have_text("dear")
    expect(rows.first.locator("td.cost")).to_have_text(f"${dear:.4f}")


def test_the_stop_button_stops_the_session_and_resume_lifts_it(page: Any, running: Running) -> None:
    page.goto("/session?id=dear")
    expect(page.locator("#session-cost")).to_contain_text("$")
    page.once("dialog", lambda dialog: dialog.accept())  # the confirmation
    page.locator("#stop-session").click()
    expect(page.locator("#stopped-banner")).to_contain_text("stopped from the UI")
    assert ("session", "dear") in running.runtime.stops.stopped
    page.locator("#resume-session").click()
    expect(page.locator("#stop-session")).to_be_visible()
    assert ("session", "dear") not in running.runtime.stops.stopped


def test_a_dismissed_confirmation_stops_nothing(page: Any, running: Running) -> None:
    page.goto("/session?id=cheap")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("#stop-session").click()
    expect(page.locator("#stop-session")).to_be_enabled()
    assert not running.runtime.stops.stopped


def test_the_call_page_and_the_agents_page_show_the_cost(page: Any, running: Running) -> None:
    [row] = running.runtime.store.list_calls(session="dear")
    page.goto(f"/call/{row['id']}")
    expect(page.locator("#call-cost")).to_contain_text("genai-prices")
    page.goto("/agents")
    agent = page.locator('tr[data-agent="coder"]')
    expect(agent.locator("td.cost")).to_contain_text("$")
    page.once("dialog", lambda dialog: dialog.accept())
    agent.get_by_role("button", name="■ Stop").click()
    expect(page.locator('tr[data-agent="coder"] .badge.error')).to_have_text("stopped")
    page.locator('tr[data-agent="coder"]').get_by_role("button", name="▶ Resume").click()
    expect(page.locator('tr[data-agent="coder"]').get_by_role("button", name="■ Stop")).to_be_visible()
