"""With `admin.token` set, every page and API call needs it; a browser gets it once and keeps a cookie."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from interlock.scripted import ScriptedUpstream
from interlock.testing import Running, run_interlock, settings_for_test, wait_for

TOKEN = "s3cret-admin-token"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("token")
    with ScriptedUpstream() as upstream:
        data = {
            "routes": {"openai": {"protocol": "openai", "upstream": upstream.url + "/v1"}},
            "admin": {"host": "127.0.0.1", "port": 0, "token": TOKEN},
        }
        with run_interlock(settings_for_test(data, tmp)) as running:
            httpx.post(
                running.url + "/openai/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers={"X-Interlock-Session": "guarded-1"},
            ).raise_for_status()
            wait_for(lambda: running.runtime.store.list_calls(session="guarded-1"), what="the call recorded")
            yield running


@pytest.mark.parametrize(
    "path",
    ["/", "/session?id=guarded-1", "/policies", "/live", "/bundle?session=guarded-1", "/static/ui.css", "/api/calls"],
)
def test_everything_needs_the_token(guarded: Running, path: str) -> None:
    assert httpx.get(guarded.admin_url + path).status_code == 401
    assert httpx.get(guarded.admin_url + path, cookies={"interlock_token": "wrong"}).status_code == 401


def test_health_stays_open(guarded: Running) -> None:
    assert httpx.get(guarded.admin_url + "/health").status_code == 200


def test_browser_token_once_then_cookie(browser: Any, guarded: Running) -> None:
    context = browser.new_context(base_url=guarded.admin_url)
    page = context.new_page()
    try:
        assert page.goto("/").status == 401
        response = page.goto(f"/?token={TOKEN}")
        assert response.status == 200
        assert "token" not in page.url  # the token leaves the address bar
        cookie = next(c for c in context.cookies() if c["name"] == "interlock_token")
        assert cookie["httpOnly"] is True
        page.locator("a.session-link", has_text="guarded-1").click()
        # Waited for, not counted at once: the click's navigation may still be loading (CI: 0 rows).
        expect(page.locator(".wf-row")).to_have_count(1)
        page.locator(".wf-row").first.click()
        expect(page).to_have_url(re.compile(r"/call/"))
        assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
        assert page.goto("/api/calls").status == 200
    finally:
        context.close()


def test_ui_has_no_way_to_write(guarded: Path) -> None:
    for path in ("/", "/policies", "/session?id=guarded-1"):
        response = httpx.post(guarded.admin_url + path, headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 405
