"""Browser tests: Playwright for Python driving Debian's Chromium, one browser per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from interlock.demo import Seeded, demo_config, seed, write_demo_policy
from interlock.scripted import ScriptedUpstream
from interlock.testing import Running, run_interlock, settings_for_test, wait_for

CHROMIUM = os.environ.get("INTERLOCK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


# Per module, not per session: while sync_playwright is open, its event loop counts as running on the main
# thread, and any later test that starts its own loop (asyncio.run, an async test) fails.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect

    # Waits are on conditions; these are only the limits, generous for a loaded 2-core machine.
    expect.set_options(timeout=20_000)
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium. Install it with"
            " `apt-get install -y chromium` (or `make chromium`); Playwright cannot download its own here.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Demo:
    running: Running
    upstream: ScriptedUpstream
    seeded: Seeded

    @property
    def url(self) -> str:
        return self.running.admin_url

    def flush(self) -> None:
        assert self.running.runtime.recorder.flush()

    def wait_recorded(self, session: str, count: int = 1, timeout: float = 60.0) -> None:
        """Wait until the session's calls are in the store. (`flush` alone can return before a call
        that was just answered is even queued: the record stage runs after the agent has its answer;
        a page loaded meanwhile would then refresh itself live under a click.)"""
        store = self.running.runtime.store
        wait_for(
            lambda: len(store.list_calls(session=session)) >= count, timeout, f"{count} calls of {session!r} recorded"
        )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """interlock with the demo's config and policy, and the demo agent's sessions recorded."""
    tmp = tmp_path_factory.mktemp("ui")
    write_demo_policy(tmp / "policies")
    with ScriptedUpstream() as upstream:
        settings = settings_for_test(demo_config(upstream.url, tmp / "policies"), tmp)
        with run_interlock(settings) as running:
            seeded = seed(running.url, upstream, suffix="t")
            result = Demo(running, upstream, seeded)
            for what, count in (("retry", 1), ("denial", 2), ("redaction", 1), ("tools", 3)):
                result.wait_recorded(seeded.sessions[what], count)
            workflow = seeded.workflows["onboarding"]
            # The workflow's seven calls.
            wait_for(lambda: len(running.runtime.store.workflow_calls(workflow)) >= 7, what=f"workflow {workflow!r}")
            yield result


@pytest.fixture(scope="module")
def page(browser: Any, demo: Demo) -> Iterator[Any]:
    """One page for the module's tests (a new page per test costs more than the test)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=demo.url, accept_downloads=True)
    context.set_default_timeout(20_000)  # a loaded 2-core machine is slow at times
    page = context.new_page()
    yield page
    context.close()
