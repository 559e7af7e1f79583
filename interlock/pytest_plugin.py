"""pytest plugin (registered as `interlock` under the `pytest11` entry point): the `interlock_replay`
fixture, which turns a recorded incident into a regression test of the agent's own code.

    def test_refund_incident(interlock_replay):
        replay = interlock_replay("tests/incidents/refund-loop.db")
        assert my_agent.run("refund order 42") == "Refunded order 42."
        replay.assert_no_divergence()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from interlock.testing import ReplayRunning, replay_server


@pytest.fixture
def interlock_replay(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ReplayRunning]]:
    """Start a replay server for a bundle (a path or a `Bundle`) on a free port; OPENAI_BASE_URL and
    ANTHROPIC_BASE_URL point at it for the rest of the test. Keyword arguments as `replay_server`
    (`speed`, `on_miss`, `ignore`, `session`, `live_settings`, `stages`)."""
    # Startup: the plugin loads in every pytest session (pytest11); the runner (uvicorn) only when a test uses
    # the fixture.
    from interlock.replay.runner import base_url_env

    with contextlib.ExitStack() as stack:

        def start(bundle: Any, **options: Any) -> ReplayRunning:
            running = stack.enter_context(replay_server(bundle, set_env=False, **options))
            for name, value in base_url_env(running.url, running.host.bundle.routes).items():
                monkeypatch.setenv(name, value)
            return running

        yield start
