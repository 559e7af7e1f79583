"""A session longer than one waterfall page (500 calls): the call page still finds the neighbours of
its oldest calls, the waterfall pages with "showing calls N–M of T", and the admin API and the UI
list sessions through the same store query."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from interlock.core.call import Call
from interlock.testing import Running, make_call, run_interlock, settings_for_test

CALLS = 620


@dataclass
class Long:
    running: Running
    ids: list[str]  # the long session's calls, oldest first


def session_call(session: str, started_at: float, agent: str = "crawler") -> Call:
    return make_call(session=session, agent=agent, started_at=started_at, duration_ms=200.0)


@pytest.fixture(scope="module")
def long(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Long]:
    tmp = tmp_path_factory.mktemp("long")
    with run_interlock(settings_for_test({"routes": {}}, tmp)) as running:
        calls = [session_call("long-session", 1_700_000_000.0 + i) for i in range(CALLS)]
        others = [session_call(f"short-{i}", 1_700_001_000.0 + i * 3, agent=f"a{i % 2}") for i in range(6)]
        running.runtime.store.write([c.to_record() for c in calls + others])
        yield Long(running, [c.id for c in calls])


@pytest.fixture(scope="module")
def page(browser: Any, long: Long) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=long.running.admin_url)
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


def test_the_oldest_call_of_a_long_session_has_neighbours(page: Any, long: Long) -> None:
    page.goto(f"/call/{long.ids[0]}")
    expect(page.locator(".stepper")).to_contain_text("next call")
    expect(page.get_by_text(f"call 1 of {CALLS}")).to_be_visible()
    page.get_by_role("link", name="next call →").click()
    expect(page).to_have_url(f"{long.running.admin_url}/call/{long.ids[1]}")
    expect(page.get_by_text(f"call 2 of {CALLS}")).to_be_visible()
    page.get_by_role("link", name="← previous call").click()
    expect(page).to_have_url(f"{long.running.admin_url}/call/{long.ids[0]}")


def test_the_waterfall_pages_through_a_long_session(page: Any, long: Long) -> None:
    page.goto("/session?id=long-session")
    expect(page.locator(".facts")).to_contain_text(str(CALLS))
    expect(page.locator("#timeline-pager")).to_contain_text(f"showing calls 1–500 of {CALLS}")
    expect(page.locator(".wf-row")).to_have_count(500)
    expect(page.locator(f'.wf-row[data-call="{long.ids[0]}"]')).to_have_count(1)
    page.get_by_role("link", name="Later calls →").click()
    expect(page.locator("#timeline-pager")).to_contain_text(f"showing calls 501–{CALLS} of {CALLS}")
    expect(page.locator(".wf-row")).to_have_count(CALLS - 500)
    expect(page.locator(f'.wf-row[data-call="{long.ids[-1]}"]')).to_have_count(1)
    expect(page.get_by_role("link", name="Later calls →")).to_have_count(0)
    page.get_by_role("link", name="← Earlier calls").click()
    expect(page.locator(".wf-row")).to_have_count(500)


def test_a_short_session_has_no_pager(page: Any, long: Long) -> None:
    page.goto("/session?id=short-0")
    expect(page.locator(".wf-row")).to_have_count(1)
    expect(page.locator("#timeline-pager")).to_have_count(0)
    assert page.goto("/session?id=short-0&offset=500").status == 404


def test_the_api_and_the_sessions_page_list_the_same_sessions(page: Any, long: Long) -> None:
    api = httpx.get(f"{long.running.admin_url}/api/sessions", params={"limit": 50}).json()["sessions"]
    page.goto("/")
    links = page.locator("a.session-link")
    expect(links).to_have_count(len(api))
    assert links.all_inner_texts() == [s["session"] for s in api]
    assert api[0]["session"] == "short-5" and api[-1]["session"] == "long-session"
    row = page.locator("table.sessions tbody tr").last
    expect(row).to_contain_text(str(CALLS))
    page.goto("/?agent=a1")
    expect(links).to_have_count(3)
    filtered = httpx.get(f"{long.running.admin_url}/api/sessions", params={"agent": "a1"}).json()["sessions"]
    assert links.all_inner_texts() == [s["session"] for s in filtered]
