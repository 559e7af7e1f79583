"""Rendering helpers without a browser: escaping, PII marks, conversations from each protocol."""

from __future__ import annotations

from interlock.protocols import ADAPTERS
from interlock.ui.render import highlight


def test_highlight_escapes_and_marks_placeholders() -> None:
    html = str(highlight("<b>mail <EMAIL_ADDRESS_1> & <US_SSN></b>"))
    assert html.startswith("&lt;b&gt;mail ")
    assert '<mark class="pii" title="EMAIL_ADDRESS_1">&lt;EMAIL_ADDRESS_1&gt;</mark>' in html
    assert '<mark class="pii" title="US_SSN">&lt;US_SSN&gt;</mark>' in html
    assert "&amp;" in html and "<b>" not in html


def test_highlight_marks_hashed_and_masked_values() -> None:
    html = str(highlight("id <EMAIL_ADDRESS#3fa2b1c4d5e6>"))
    assert '<mark class="pii" title="EMAIL_ADDRESS#3fa2b1c4d5e6">' in html
    html = str(highlight("card **** **** **** 6467, mail ****@****-****.**", ("CREDIT_CARD",)))
    assert '<mark class="pii" title="masked CREDIT_CARD">**** **** **** 6467</mark>' in html
    assert '<mark class="pii" title="masked CREDIT_CARD">****@****-****.**</mark>' in html
    assert "<mark" not in str(highlight("a ** b ****"))  # stars are text unless something was masked


def test_openai_chat_conversation_with_tool_calls() -> None:
    request = {
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "function": {"name": "w", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ]
    }
    response = {"choices": [{"message": {"role": "assistant", "content": "It is sunny."}}]}
    messages = ADAPTERS["openai"].conversation(request, response)
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[1].text == "weather?" and messages[1].where == "request.messages[1]"
    assert messages[2].tool_calls[0].name == "w"
    assert messages[3].tool_call_id == "c1"
    assert messages[4].response and messages[4].text == "It is sunny."


def test_openai_responses_conversation() -> None:
    request = {"instructions": "sys", "input": [{"type": "function_call_output", "call_id": "x", "output": "42"}]}
    response = {"output": [{"type": "function_call", "name": "calc", "arguments": "{}", "call_id": "y"}]}
    messages = ADAPTERS["openai"].conversation(request, response)
    assert [(m.role, m.text) for m in messages] == [("system", "sys"), ("tool", "42"), ("assistant", "")]
    assert messages[2].tool_calls[0].name == "calc"


def test_anthropic_conversation() -> None:
    request = {
        "system": "sys",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "get", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "done"}]},
        ],
    }
    response = {"type": "message", "content": [{"type": "text", "text": "ok"}]}
    messages = ADAPTERS["anthropic"].conversation(request, response)
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[2].tool_calls[0].arguments == '{"a": 1}'
    assert messages[3].text == "done" and messages[3].tool_call_id == "t"
