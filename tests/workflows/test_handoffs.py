"""Handoff detection on made-up rows (tracing/workflow.py): what counts as span parentage and as text
flowing between agents, and what does not."""

from __future__ import annotations

from typing import Any

from interlock.tracing.workflow import TEXT_RUN, incidents, span_handoffs, text_handoffs


def row(call_id: str, agent: str, at: float, **fields: Any) -> dict[str, Any]:
    return {"id": call_id, "agent": agent, "started_at": at, "span_id": None, "parent_span_id": None, **fields}


def test_a_call_hangs_from_interlocks_span_of_another_agents_call() -> None:
    rows = [
        row("a", "orchestrator", 1, span_id="1" * 16),
        row("b", "tool-agent", 2, parent_span_id="1" * 16),
        row("c", "tool-agent", 3, parent_span_id="1" * 16),  # one arrow per (source, agent)
    ]
    assert [(h.source, h.target, h.kind) for h in span_handoffs(rows)] == [("a", "b", "span")]


def test_a_span_counts_as_a_calls_own_only_when_its_agent_sent_one_call_from_it() -> None:
    step = "2" * 16
    rows = [row("a", "orchestrator", 1, parent_span_id=step), row("b", "extraction", 2, parent_span_id=step)]
    assert [(h.source, h.target) for h in span_handoffs(rows)] == [("a", "b")]
    # Every call of every agent sent from one span: no handoff can be read from it.
    shared = "3" * 16
    rows = [
        row("a", "orchestrator", 1, parent_span_id=shared),
        row("b", "orchestrator", 2, parent_span_id=shared),
        row("c", "extraction", 3, parent_span_id=shared),
    ]
    assert span_handoffs(rows) == []


def test_text_flows_when_a_long_enough_run_of_an_answer_reappears_in_another_agents_request() -> None:
    answer = "Client: Acme Shipping Holdings Ltd. Jurisdiction: Cyprus. Sector: bulk shipping. Facility: EUR 4M."
    rows = [row("a", "extraction", 1), row("b", "risk", 2), row("c", "extraction", 3), row("d", "report", 4)]
    texts = {
        "a": ("brief", answer),
        # Case and whitespace do not matter; the run sits inside other text.
        "b": ("Score this:\n" + answer.upper().replace(" ", "  ") + "\nThanks", "72/100"),
        "c": ("again: " + answer, ""),  # the same agent: not a handoff
        "d": ("short: " + answer[: TEXT_RUN - 2], ""),  # a run shorter than TEXT_RUN
    }
    found = text_handoffs(rows, texts)
    assert [(h.source, h.target, h.kind) for h in found] == [("a", "b", "text")]
    assert found[0].detail == f"{len(answer)} characters of its answer"


def test_a_run_of_exactly_the_threshold_is_found_wherever_it_starts() -> None:
    answer = " ".join(f"w{i}{chr(ord('a') + (i * 7) % 26)}" for i in range(200))  # words of 3 to 5 characters
    for start in (0, 2, 5, 31, 33, 100):  # inside a word, or at its start
        piece = answer[start : start + TEXT_RUN]
        rows = [row("a", "one", 1), row("b", "two", 2)]
        found = text_handoffs(rows, {"a": ("", answer), "b": ("<<" + piece + ">>", "")})
        assert [(h.source, h.target) for h in found] == [("a", "b")], start


def test_failures_say_what_followed() -> None:
    rows = [
        row("a", "risk", 1, outcome="ok", attempt_count=2),
        row("b", "risk", 2, outcome="upstream_error", attempt_count=1),
        row("c", "risk", 3, outcome="ok", attempt_count=1),
        row("d", "risk", 4, outcome="denied", attempt_count=1),
        row("e", "orchestrator", 5, outcome="ok", attempt_count=1),
        row("f", "report", 6, outcome="aborted", attempt_count=1),
    ]
    assert [(i["call"], i["kind"], i["then"]) for i in incidents(rows)] == [
        ("a", "retried", None),
        ("b", "retry", "c"),
        ("d", "escalation", "e"),
        ("f", "none", None),
    ]
