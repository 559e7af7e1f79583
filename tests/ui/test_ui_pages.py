"""The web UI in a real browser: sessions → session waterfall → call, live updates, actions, escaping."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from interlock.replay.bundle import open_bundle
from interlock.scripted import Script
from tests.proxy.routing_support import wait_for


def open_session(page: Any, demo: Any, what: str) -> None:
    page.goto("/")
    page.locator("a.session-link", has_text=demo.seeded.sessions[what]).click()
    expect(page.locator("h1")).to_contain_text(demo.seeded.sessions[what])


def test_sessions_list_says_what_happened_in_each_session(page: Any, demo: Any) -> None:
    page.goto("/")
    sessions = demo.seeded.sessions
    rows = page.locator("table.sessions tbody tr")
    # The four sessions, and the workflow's four agents' sessions; the warm-up call has no session.
    expect(rows).to_have_count(8)
    expect(rows.filter(has_text=sessions["retry"])).to_contain_text("1 retried")
    expect(rows.filter(has_text=sessions["denial"])).to_contain_text("1 denied")
    expect(rows.filter(has_text=sessions["redaction"])).to_contain_text("1 PII")
    expect(rows.filter(has_text=sessions["tools"])).to_contain_text("travel-bot")
    expect(rows.filter(has_text=sessions["tools"]).locator("td[data-label=Calls]")).to_have_text("3")


def test_retry_session_to_call_shows_the_failed_and_the_good_attempt(page: Any, demo: Any) -> None:
    open_session(page, demo, "retry")
    row = page.locator(".wf-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("retried after 503")
    expect(row).to_contain_text("Your order #1042 shipped")  # what came back, on the waterfall
    expect(row.locator(".seg.attempt.failed")).to_have_count(1)
    row.click()
    expect(page).to_have_url(re.compile(r"/call/"))
    attempts = page.locator("#attempts tbody tr")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("503")
    expect(attempts.nth(1)).to_contain_text("200")
    chat = page.locator("ol.chat > li")
    expect(chat.nth(0)).to_have_class(re.compile("system"))
    expect(chat.nth(1)).to_contain_text("Where is my order #1042?")
    expect(chat.nth(2)).to_contain_text("model's answer")
    expect(page.locator("#headers")).not_to_contain_text("demo-key")  # credentials never stored


def test_denied_call_names_the_rule(page: Any, demo: Any) -> None:
    open_session(page, demo, "denial")
    rows = page.locator(".wf-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("403 denied")
    expect(rows.nth(0).locator(".marker.denied")).to_be_visible()
    expect(rows.nth(1)).to_contain_text("200 ok")
    rows.nth(0).click()
    expect(page.locator(".outcome-box")).to_contain_text("gpt-4o-preview")
    decision = page.locator("#decisions tr.decision.deny")
    expect(decision).to_contain_text("no-preview-models")
    expect(page.locator("#attempts")).to_contain_text("refused before reaching any upstream")
    expect(page.locator("ol.chat > li.interlock")).to_contain_text("the model was never called")


def test_redacted_email_is_highlighted_and_never_shown(page: Any, demo: Any) -> None:
    open_session(page, demo, "redaction")
    expect(page.locator(".wf-row .marker.redacted")).to_contain_text("1 PII (redact)")
    page.locator(".wf-row").first.click()
    user = page.locator("ol.chat > li.user")
    expect(user.locator("mark.pii")).to_have_text("<EMAIL_ADDRESS_1>")
    expect(page.locator("ol.chat > li.response mark.pii")).to_have_text("<EMAIL_ADDRESS_1>")
    expect(page.locator("#findings")).to_contain_text("EMAIL_ADDRESS")
    expect(page.locator("#findings")).to_contain_text("request.messages[1].content")
    expect(page.locator("#decisions")).to_contain_text("guardrails")
    assert "jane.doe@example.com" not in page.content()


def test_streamed_tool_loop(page: Any, demo: Any) -> None:
    open_session(page, demo, "tools")
    rows = page.locator(".wf-row")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("calls get_weather")
    expect(rows.nth(0).locator(".marker.modified")).to_be_visible()  # delete_booking stripped
    expect(rows.nth(1).locator(".kind.tool")).to_be_visible()
    rows.nth(2).click()
    expect(page.locator(".toolcall .tool-name")).to_have_text("get_weather")
    expect(page.locator("ol.chat > li.tool")).to_contain_text("light rain")
    expect(page.locator("ol.chat > li.response")).to_contain_text("pack an umbrella")
    expect(page.locator("#chunks tbody tr").first).to_contain_text("ms")
    expect(page.locator("#decisions")).to_contain_text("stripped offered tools: delete_booking")
    page.locator("a", has_text="previous call").click()
    expect(page.locator("h1")).to_contain_text("/tools/weather")


def test_policies_page_lists_rules_and_fire_counts(page: Any, demo: Any) -> None:
    page.goto("/policies")
    rows = page.locator("table.rules tbody tr")
    expect(rows).to_have_count(2)
    fired = rows.filter(has_text="no-preview-models").locator("td.num")
    assert int(fired.inner_text()) >= 1
    expect(rows.filter(has_text="no-destructive-tools")).to_contain_text("demo-policy.yaml")
    expect(page.locator("form")).to_have_count(0)  # nothing here can change a policy


def test_search_and_filters(page: Any, demo: Any) -> None:
    page.goto("/")
    page.fill("input[name=q]", "umbrella")
    page.click("button[type=submit]")
    rows = page.locator("table.sessions tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(demo.seeded.sessions["tools"])
    page.goto("/?outcome=denied")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(demo.seeded.sessions["denial"])
    page.goto("/?agent=billing-bot&time=1h")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(demo.seeded.sessions["redaction"])
    page.goto("/?q=nothing-like-this-anywhere")
    expect(page.locator(".empty")).to_contain_text("No session matches")


def test_paging(page: Any, demo: Any) -> None:
    page.goto("/?offset=7")
    expect(page.locator("table.sessions tbody tr")).to_have_count(1)
    page.click("text=← Newer")
    expect(page.locator("table.sessions tbody tr")).to_have_count(8)


def test_new_call_appears_without_reload(page: Any, demo: Any) -> None:
    page.goto("/")
    expect(page.locator("#live.on")).to_be_visible()  # the event stream is open
    page.evaluate("window.notReloaded = true")
    demo.upstream.script(Script(text="live!"))
    httpx.post(
        demo.running.url + "/openai/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello live"}]},
        headers={"X-Interlock-Agent": "live-bot", "X-Interlock-Session": "live-session-1"},
    ).raise_for_status()
    expect(page.locator("a.session-link", has_text="live-session-1")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True
    # A session's waterfall grows too.
    page.locator("a.session-link", has_text="live-session-1").click()
    expect(page.locator(".wf-row")).to_have_count(1)
    expect(page.locator("#live.on")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    httpx.post(
        demo.running.url + "/openai/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "second"}]},
        headers={"X-Interlock-Agent": "live-bot", "X-Interlock-Session": "live-session-1"},
    ).raise_for_status()
    expect(page.locator(".wf-row")).to_have_count(2)
    assert page.evaluate("window.notReloaded") is True


def test_a_script_in_a_message_is_shown_not_run(page: Any, demo: Any) -> None:
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> </textarea>'
    demo.upstream.script(Script(text=hostile))
    httpx.post(
        demo.running.url + "/openai/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": hostile}]},
        headers={"X-Interlock-Agent": "<b>evil</b>", "X-Interlock-Session": "<script>s</script>"},
    ).raise_for_status()
    demo.wait_recorded("<script>s</script>")
    page.goto("/")
    page.locator("a.session-link", has_text="<script>s</script>").click()
    page.locator(".wf-row").first.click()
    expect(page.locator("ol.chat > li.user .text")).to_have_text(hostile)
    expect(page.locator("ol.chat > li.response .text")).to_have_text(hostile)
    assert page.evaluate("window.pwned") is None
    assert page.locator("ol.chat script, ol.chat img").count() == 0


def test_download_bundle_and_copy_replay_command(page: Any, demo: Any, tmp_path: Path) -> None:
    open_session(page, demo, "tools")
    with page.expect_download() as info:
        page.click("#download-bundle")
    download = info.value
    assert download.suggested_filename == demo.seeded.sessions["tools"] + ".db"
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    bundle = open_bundle(path)
    assert bundle.sessions == [demo.seeded.sessions["tools"]]
    assert len(bundle.calls) == 3
    assert set(bundle.routes) == {"openai", "tools"}
    command = page.locator("#replay-command").inner_text()
    assert f"--session {demo.seeded.sessions['tools']} " in command
    assert "interlock replay serve" in command
    page.click("button.copy")
    expect(page.locator("button.copy")).to_have_text("Copied")


def test_unknown_session_and_call_are_404(page: Any, demo: Any) -> None:
    assert page.goto("/session?id=nope").status == 404
    assert page.goto("/call/nope").status == 404


def test_bad_input_gets_a_clear_answer_not_a_500(page: Any, demo: Any) -> None:
    response = page.goto('/?q="unterminated&offset=abc&outcome=nonsense&time=forever')
    assert response.status == 200
    expect(page.locator(".error-box")).to_contain_text("bad search query")
    assert page.goto("/bundle?session=nope").status == 404


def test_calls_page_lists_every_call_including_those_without_a_session(page: Any, demo: Any) -> None:
    page.goto("/calls?agent=demo")
    rows = page.locator("table.calls tbody tr")
    expect(rows).to_have_count(1)  # the demo's warm-up call
    expect(rows).to_contain_text("none")
    page.goto("/calls?outcome=denied")
    expect(rows.first).to_contain_text("403 denied")
    rows.first.locator("a.call-link").click()
    expect(page.locator("#decisions")).to_contain_text("no-preview-models")


def test_upstreams_page_shows_both_kinds_of_breaker(page: Any, demo: Any) -> None:
    api = httpx.get(demo.url + "/api/upstreams").json()["routes"]
    page.goto("/")
    page.locator("nav a", has_text="Upstreams").click()
    expect(page.locator("h1")).to_have_text("Upstreams")
    for name, route in api.items():
        section = page.locator(f'section.route[data-route="{name}"]')
        for upstream in route["upstreams"]:
            row = section.locator(f'tr[data-upstream="{upstream["name"]}"]')
            state = upstream["breaker"]["state"]
            expect(row.locator(".upstream-breaker .badge")).to_have_attribute("data-state", state)
            for model in upstream["models"]:
                expect(row.locator(f'.model-breaker[data-model="{model}"] .badge')).to_have_count(1)
    assert any(u["models"] for r in api.values() for u in r["upstreams"])  # the demo's calls made model breakers


# -- the demo's multi-agent workflow (docs/workflows.md) -------------------------------------


def test_workflows_list_links_to_the_workflow(page: Any, demo: Any) -> None:
    workflow = demo.seeded.workflows["onboarding"]
    page.goto("/workflows")
    row = page.locator("table.workflows tbody tr", has_text=workflow)
    expect(row).to_contain_text("orchestrator")
    expect(row.locator("td[data-label=Calls]")).to_have_text("7")
    expect(row).to_contain_text("1 retried")
    expect(row).to_contain_text(re.compile(r"\d+ PII"))  # the e-mail address, in every call that carried it
    page.goto("/workflows?agent=billing-bot")  # an agent of no workflow
    expect(page.locator("table.workflows")).to_have_count(0)
    page.goto("/workflows")
    row.locator("a.workflow-link").click()
    expect(page).to_have_url(re.compile(r"/workflow\?id="))
    expect(page.locator("h1")).to_contain_text(workflow)


def test_the_workflow_page_draws_lanes_and_handoffs(page: Any, demo: Any) -> None:
    workflow = demo.seeded.workflows["onboarding"]
    page.goto(f"/workflow?id={workflow}")
    lanes = page.locator(".lanes .lane[data-agent]")
    expect(lanes).to_have_count(4)
    assert lanes.evaluate_all("ls => ls.map(l => l.dataset.agent)") == [
        "orchestrator",
        "extraction",
        "risk-scorer",
        "report",
    ]
    expect(page.locator(".lane[data-agent=orchestrator] .lane-call")).to_have_count(4)
    # The risk scorer's call shows its failed first attempt (the timeout) and the good one.
    risk = page.locator(".lane[data-agent=risk-scorer] .lane-call")
    expect(risk.locator(".seg.attempt")).to_have_count(2)
    expect(risk.locator(".seg.attempt.failed")).to_have_count(1)
    expect(page.locator("li.incident.retried")).to_contain_text("risk-scorer")
    # Handoffs: listed, and drawn as arrows between bars of different lanes.
    span = page.locator("ol.handoffs li.handoff.span")
    expect(span).to_have_count(3)
    expect(page.locator("ol.handoffs li.handoff.text", has_text="extraction → risk-scorer")).to_have_count(1)
    arrows = page.locator("svg.handoff-arrows path.handoff-arrow")
    expect(arrows).to_have_count(page.locator("ol.handoffs li.handoff").count())
    # An arrow starts at its source bar's right end and ends at its target bar's left end.
    first = page.locator("ol.handoffs li.handoff").first
    source, target = first.get_attribute("data-from"), first.get_attribute("data-to")
    geometry = page.evaluate(
        """([s, t]) => {
          const path = document.querySelector(`svg.handoff-arrows path[data-from="${s}"][data-to="${t}"]`);
          const box = document.getElementById("lanes").getBoundingClientRect();
          const a = document.querySelector(`.lane-call[data-call="${s}"]`).getBoundingClientRect();
          const b = document.querySelector(`.lane-call[data-call="${t}"]`).getBoundingClientRect();
          const start = path.getPointAtLength(0), end = path.getPointAtLength(path.getTotalLength());
          return [start.x - (a.right - box.left), end.x - (b.left - box.left), a.top < b.top];
        }""",
        [source, target],
    )
    assert abs(geometry[0]) < 1 and abs(geometry[1]) < 1 and geometry[2]  # from an upper lane down
    expect(page.locator(".facts .cost dd")).to_contain_text("$")
    # Per agent totals.
    extraction = page.locator("table.agents-table tr[data-agent=extraction]")
    expect(extraction.locator("td[data-label=PII]")).to_have_text("1")
    expect(page.locator("table.agents-table tr[data-agent=risk-scorer] td[data-label=Retries]")).to_have_text("1")
    # A call, and an agent's session, link back to the workflow.
    page.goto(f"/session?id={workflow}-risk-scorer")
    expect(page.locator(".facts a.workflow-link")).to_have_text(workflow)
    page.goto(f"/workflow?id={workflow}")
    page.locator(".lane[data-agent=report] .lane-call").click()
    expect(page).to_have_url(re.compile(r"/call/"))
    page.locator(".facts a.workflow-link").click()
    expect(page.locator(".lanes .lane[data-agent]")).to_have_count(4)
    # One bundle for the whole workflow.
    with page.expect_download() as download:
        page.click("#download-bundle")
    assert download.value.suggested_filename == f"{workflow}.db"
    expect(page.locator("#replay-command")).to_contain_text(f"interlock export --workflow {workflow}")


def test_a_missing_workflow_is_a_404(page: Any, demo: Any) -> None:
    assert page.goto("/workflow?id=nope").status == 404
    assert page.goto("/bundle?workflow=nope").status == 404


def test_a_workflow_page_grows_a_lane_live(page: Any, demo: Any) -> None:
    def call(agent: str) -> None:
        demo.upstream.script(Script(text=f"{agent} here"))
        httpx.post(
            demo.running.url + "/openai/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "status?"}]},
            headers={"X-Interlock-Agent": agent, "X-Interlock-Workflow": "live-workflow-1"},
        ).raise_for_status()

    call("planner")
    store = demo.running.runtime.store
    wait_for(lambda: store.workflow_summary("live-workflow-1") is not None)
    page.goto("/workflow?id=live-workflow-1")
    expect(page.locator("#live.on")).to_be_visible()
    expect(page.locator(".lanes .lane[data-agent]")).to_have_count(1)
    page.evaluate("window.notReloaded = true")
    call("executor")
    expect(page.locator(".lanes .lane[data-agent]")).to_have_count(2)
    assert page.evaluate("window.notReloaded") is True


def test_audit_page_shows_who_did_what_and_whether_the_record_verifies(page: Any, demo: Any) -> None:
    page.goto("/audit")
    chain = page.locator("#chain")
    expect(chain).to_have_attribute("data-chain", "ok")
    expect(chain).to_contain_text("The record verifies")
    lines = page.locator("#summaries li")
    expect(lines.filter(has_text="agent billing-bot")).to_contain_text("EMAIL_ADDRESS in 1 (redacted)")
    expect(lines.filter(has_text="agent travel-bot")).to_contain_text("tools: get_weather 1")
    expect(page.locator("#audit-rows")).not_to_contain_text("jane.doe@example.com")  # types, never values
    page.locator("input[name=entity]").fill("EMAIL_ADDRESS")
    page.locator("form.filters button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"entity=EMAIL_ADDRESS"))
    expect(page.locator("#summaries li[data-agent=billing-bot]")).to_be_visible()
    expect(page.locator("#summaries li[data-agent=travel-bot]")).to_have_count(0)
    jsonl = httpx.get(demo.url + page.locator("#export-jsonl").get_attribute("href"))
    assert jsonl.status_code == 200 and all('"EMAIL_ADDRESS"' in line for line in jsonl.text.splitlines())
    # Someone edits a recorded call in the file: the page says so and names it.
    path = demo.running.settings.store.path
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        call_id, agent = conn.execute("SELECT id, agent FROM calls WHERE agent = 'billing-bot'").fetchone()
        conn.execute("UPDATE calls SET agent = 'nobody' WHERE id = ?", (call_id,))
    try:
        page.goto("/audit")  # the last verdict may be reused for a while (it reads every call) ...
        page.locator("#verify-now").click()  # ... a new one on request
        expect(chain).to_have_attribute("data-chain", "broken")
        expect(chain).to_contain_text(call_id)
    finally:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("UPDATE calls SET agent = ? WHERE id = ?", (agent, call_id))
    page.goto("/audit?verify=fresh")
    expect(chain).to_have_attribute("data-chain", "ok")
