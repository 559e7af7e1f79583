"""Screenshots of the demo's sessions for the README: light and dark, 1280 px and a narrow window.

Its own module, so its interlock holds only the demo's sessions (nothing the other tests add).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_screenshots(browser: Any, demo: Any) -> None:
    """Light and dark, 1280 px and a narrow window: docs/screenshots/*.png (shown in the README)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    sessions = demo.seeded.sessions
    for scheme in ("light", "dark"):
        for width, name in ((1280, "wide"), (420, "narrow")):
            context = browser.new_context(
                viewport={"width": width, "height": 800}, color_scheme=scheme, base_url=demo.url
            )
            page = context.new_page()
            page.goto("/")
            page.screenshot(path=SCREENSHOTS / f"sessions-{scheme}-{name}.png", full_page=True)
            page.goto(f"/session?id={sessions['tools']}")
            page.screenshot(path=SCREENSHOTS / f"session-{scheme}-{name}.png", full_page=True)
            page.goto(f"/session?id={sessions['redaction']}")
            page.locator(".wf-row").first.click()
            expect(page.locator("ol.chat")).to_be_visible()
            page.screenshot(path=SCREENSHOTS / f"call-{scheme}-{name}.png", full_page=False)
            if name == "wide":
                page.goto(f"/session?id={sessions['retry']}")
                page.screenshot(path=SCREENSHOTS / f"session-retry-{scheme}-{name}.png", full_page=True)
                page.goto("/policies")
                page.screenshot(path=SCREENSHOTS / f"policies-{scheme}-{name}.png", full_page=True)
            context.close()
    assert (SCREENSHOTS / "sessions-dark-narrow.png").stat().st_size > 10_000
