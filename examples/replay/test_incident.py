"""Incident SUP-1017 as a regression test: the agent refunded an order twice.

incident.db is the session exported from production (`interlock export --session
support-ticket-1017 -o incident.db`). The replay answers every model call from it, so the test needs
no network, no key and no money, and runs the agent's real code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import agent  # noqa: E402

INCIDENT = HERE / "incident.db"


def test_the_incident_reproduces(interlock_replay, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPENAI_API_KEY", "unused-in-a-replay")
    replay = interlock_replay(INCIDENT)
    shop = agent.Shop()
    answer = agent.run("Please refund order 42, it arrived broken.", shop)
    assert answer.startswith("I have refunded order 42")
    assert shop.refunds == [("42", 30.0), ("42", 30.0)]  # the bug, reproduced offline
    replay.assert_no_divergence(all_used=True)


def test_the_prompt_fix_changes_the_path_at_the_first_model_call(
    interlock_replay, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPENAI_API_KEY", "unused-in-a-replay")
    replay = interlock_replay(INCIDENT)
    fixed = agent.SYSTEM + " Never call refund twice for one order."
    with pytest.raises(openai.APIStatusError) as raised:
        agent.run("Please refund order 42, it arrived broken.", agent.Shop(), system=fixed)
    # The replay cannot know what the model would answer to the new prompt: it says exactly where the
    # run left the recording. (Re-run it against a model with `interlock replay run`, or continue
    # live from there with `on_miss="live"`.)
    assert raised.value.status_code == 409
    [miss] = replay.summary().misses
    assert (miss.index, miss.closest_step) == (1, 1)
    assert miss.differences[0].label == "messages[0] (system)"
    print(replay.summary().text())
