"""The caps a session has consumed (issue 22), in a real browser and over JSON: the session page and
`GET /api/sessions/{id}` list each run cap that applies to the session with its limit, its use and
whether it is reached; when the counters cannot be read (the shared state down), the page says
"unavailable" and still answers 200.

The caps themselves are tested through the SDKs (tests/policies/test_session_caps.py), the counters'
`read` by every backend (tests/conformance/test_counters_contract.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import expect

from interlock.prices import cost_text
from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running, free_port, run_interlock, settings_for_test
from tests.conftest import routes_for
from tests.proxy.routing_support import wait_for

POLICY = """\
rules:
  - name: run-cap
    limits: {per: session, max_calls: 2, max_usd: 50, max_duration: 3600}
  - name: other-agent-cap   # another agent's: not this session's
    match: {agent: someone-else}
    limits: {per: session, max_calls: 1}
  - name: claude-cap        # only calls to Claude models: this session made none
    match: {model: "claude-*"}
    limits: {per: session, max_tokens: 10}
"""


def write_policy(folder: Path) -> str:
    folder.mkdir()
    (folder / "caps.yaml").write_text(POLICY)
    return str(folder)


def chat(running: Running, session: str) -> Any:
    with openai.OpenAI(
        base_url=running.url + "/openai",
        api_key="sk-agent",
        max_retries=0,
        default_headers={"X-Interlock-Session": session, "X-Interlock-Agent": "coder"},
    ) as client:
        return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("ui-caps")
    data = {"routes": routes_for(upstream), "policies": [write_policy(tmp / "policies")], "shutdown_grace": 2}
    with run_interlock(settings_for_test(data, tmp)) as running:
        upstream.script(Script(input_tokens=1000, output_tokens=10), Script(input_tokens=1000, output_tokens=10))
        chat(running, "capped")
        chat(running, "capped")
        with pytest.raises(openai.PermissionDeniedError):
            chat(running, "capped")  # the third call is over max_calls
        wait_for(lambda: len(running.runtime.store.list_calls(session="capped")) >= 3)
        yield running


@pytest.fixture(scope="module")
def stateless(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[Running]:
    """An interlock whose shared state (Redis) is a port nothing listens on."""
    tmp = tmp_path_factory.mktemp("ui-caps-down")
    data = {
        "routes": routes_for(upstream),
        "policies": [write_policy(tmp / "policies")],
        "state": {
            "url": f"redis://127.0.0.1:{free_port()}/0",
            "timeout": 1.0,
            "vault_key": "test vault key, not a secret: 0123",
        },
        "shutdown_grace": 2,
    }
    with run_interlock(settings_for_test(data, tmp)) as running:
        # A run cap is a budget: unchecked, the call is refused (state.on_failure.budget: fail_closed).
        with pytest.raises(openai.InternalServerError) as refused:
            chat(running, "adrift")
        assert refused.value.status_code == 503
        assert refused.value.body["code"] == "state_unavailable"  # type: ignore[index]
        wait_for(lambda: len(running.runtime.store.list_calls(session="adrift")) >= 1)
        yield running


@pytest.fixture(scope="module")
def page(browser: Any, running: Running) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    context.close()


def test_the_session_page_shows_each_cap_its_use_and_whether_it_is_reached(page: Any, running: Running) -> None:
    cost = running.runtime.store.session_summary("capped")["cost_usd"]
    page.goto(running.admin_url + "/session?id=capped")
    rows = page.locator("table.caps tbody tr")
    expect(rows).to_have_count(3)  # run-cap's three; the other agent's and the Claude rule's do not apply
    calls = page.locator('tr[data-rule="run-cap"][data-cap="max_calls"]')
    expect(calls.locator("td.used")).to_have_text("2")
    expect(calls.locator("td.limit")).to_have_text("2")
    expect(calls.locator("td.state")).to_contain_text("reached")
    usd = page.locator('tr[data-rule="run-cap"][data-cap="max_usd"]')
    expect(usd.locator("td.used")).to_have_text(cost_text(cost))
    expect(usd.locator("td.state")).to_contain_text("under")
    duration = page.locator('tr[data-rule="run-cap"][data-cap="max_duration"]')
    expect(duration.locator("td.limit")).to_have_text("60.0 min")
    expect(duration.locator("td.state")).to_contain_text("under")


def test_the_session_api_lists_the_caps(running: Running) -> None:
    session = httpx.get(running.admin_url + "/api/sessions/capped").json()
    caps = {cap["cap"]: cap for cap in session["caps"]}
    assert {cap["rule"] for cap in session["caps"]} == {"run-cap"}
    assert (caps["max_calls"]["used"], caps["max_calls"]["limit"], caps["max_calls"]["reached"]) == (2, 2, True)
    assert caps["max_usd"]["used"] == pytest.approx(session["cost_usd"]) and not caps["max_usd"]["reached"]
    assert 0 <= caps["max_duration"]["used"] < 3600 and not caps["max_duration"]["reached"]
    assert "caps_unavailable" not in session


def test_a_session_under_its_caps_shows_them_not_reached(running: Running) -> None:
    chat(running, "other")
    wait_for(lambda: running.runtime.store.session_summary("other") is not None)
    caps = httpx.get(running.admin_url + "/api/sessions/other").json()["caps"]
    assert [(c["cap"], c["used"], c["reached"]) for c in caps if c["cap"] == "max_calls"] == [("max_calls", 1, False)]


def test_unreadable_counters_are_shown_as_unavailable(browser: Any, stateless: Running) -> None:
    response = httpx.get(stateless.admin_url + "/api/sessions/adrift")
    assert response.status_code == 200
    assert response.json()["caps"] == [] and response.json()["caps_unavailable"]
    context = browser.new_context()
    try:
        page = context.new_page()
        answer = page.goto(stateless.admin_url + "/session?id=adrift")
        assert answer.status == 200
        expect(page.locator("#caps-unavailable")).to_contain_text("unavailable")
        expect(page.locator("table.caps")).to_have_count(0)
    finally:
        context.close()
