"""Screenshots of the demo's sessions for the README: light and dark, 1280 px and a narrow window.

Its own module, so its interlock holds only the demo's sessions (nothing the other tests add).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_screenshots(browser: Any, demo: Any, tmp_path: Path) -> None:
    """Light and dark, 1280 px and a narrow window. With INTERLOCK_SCREENSHOTS=1 they replace
    docs/screenshots/*.png (shown in the README); otherwise they go to a temporary folder, so a
    test run leaves the work tree as it was."""
    folder = DOCS if os.environ.get("INTERLOCK_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    sessions = demo.seeded.sessions
    for scheme in ("light", "dark"):
        for width, name in ((1280, "wide"), (420, "narrow")):
            context = browser.new_context(
                viewport={"width": width, "height": 800}, color_scheme=scheme, base_url=demo.url
            )
            page = context.new_page()
            page.goto("/")
            page.screenshot(path=folder / f"sessions-{scheme}-{name}.png", full_page=True)
            page.goto(f"/session?id={sessions['tools']}")
            page.screenshot(path=folder / f"session-{scheme}-{name}.png", full_page=True)
            page.goto(f"/session?id={sessions['redaction']}")
            page.locator(".wf-row").first.click()
            expect(page.locator("ol.chat")).to_be_visible()
            page.screenshot(path=folder / f"call-{scheme}-{name}.png", full_page=False)
            if name == "wide":
                page.goto(f"/session?id={sessions['retry']}")
                page.screenshot(path=folder / f"session-retry-{scheme}-{name}.png", full_page=True)
                page.goto("/policies")
                page.screenshot(path=folder / f"policies-{scheme}-{name}.png", full_page=True)
                page.goto(f"/workflow?id={demo.seeded.workflows['onboarding']}")
                expect(page.locator("svg.handoff-arrows path.handoff-arrow").first).to_be_attached()
                page.screenshot(path=folder / f"workflow-{scheme}-{name}.png", full_page=True)
            context.close()
    assert (folder / "sessions-dark-narrow.png").stat().st_size > 10_000
