"""The demo's multi-agent workflow in Chromium: the list, a lane per agent on one axis, the handoff
arrows drawn between the lanes, the retried timeout, the totals per agent, the bundle."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect


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
    # A call links back to its workflow.
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
