"""The guardrails stage alone, with made-up calls: caching, failing closed, actions from the policy."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interlock.config import Settings
from interlock.core.actions import GuardrailActions
from interlock.core.call import Call
from interlock.guardrails.stage import Guardrails, where
from interlock.protocols import ADAPTERS
from interlock.proxy.parse import Parse

EMAIL = "jane.roe@acme-corp.io"


def make_settings(**guardrails: Any) -> Settings:
    return Settings.model_validate({"guardrails": guardrails})


async def parsed(body: dict[str, Any], protocol: str = "openai", path: str = "/chat/completions") -> Call:
    call = Call(id="c1", route=protocol, protocol=protocol, method="POST", path=path, session="s")
    call.request_body = json.dumps(body).encode()
    await Parse().request(call)
    assert call.reply is None
    return call


class CountingDetector:
    def __init__(self, inner: Any) -> None:
        self.inner, self.texts = inner, []  # type: list[str]

    def detect(self, text: str) -> Any:
        self.texts.append(text)
        return self.inner.detect(text)

    def detect_many(self, texts: list[str]) -> Any:
        self.texts += texts
        return self.inner.detect_many(texts)


def test_where_reads_like_a_path() -> None:
    assert where(("messages", 2, "content")) == "messages[2].content"
    assert where(("input",)) == "input"


async def test_history_sent_again_is_not_analysed_again() -> None:
    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "redact"}))
    counting = CountingDetector(await stage.detector())
    stage._detector = counting  # type: ignore[assignment]
    turn = [{"role": "user", "content": f"mail {EMAIL}"}]
    first = await parsed({"model": "m", "messages": turn})
    await stage.request(first)
    turn += [{"role": "assistant", "content": "done"}, {"role": "user", "content": "thanks"}]
    second = await parsed({"model": "m", "messages": turn})
    await stage.request(second)
    assert counting.texts == [f"mail {EMAIL}", "done", "thanks"]
    assert second.request_json["messages"][0]["content"] == "mail <EMAIL_ADDRESS_1>"


async def test_a_legacy_completion_s_batched_prompt_and_suffix_are_scanned() -> None:
    # `/completions` takes `prompt` as a list of strings (a batch) and a `suffix`: every text is read.
    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "redact"}))
    body = {"model": "m", "prompt": ["hi", f"mail {EMAIL}"], "suffix": f"cc {EMAIL}"}
    call = await parsed(body, path="/completions")
    await stage.request(call)
    assert call.request_json["prompt"] == ["hi", "mail <EMAIL_ADDRESS_1>"]
    assert call.request_json["suffix"] == "cc <EMAIL_ADDRESS_1>"


@pytest.mark.parametrize(
    ("path", "body", "gaps"),
    [
        ("/completions", {"model": "m", "prompt": [1734, 374]}, "prompt (token ids)"),
        ("/completions", {"model": "m", "prompt": [[1734], f"mail {EMAIL}"]}, "prompt[0] (token ids)"),
        ("/embeddings", {"model": "m", "input": [[1734, 374], [9]]}, "input[0] (token ids), input[1] (token ids)"),
    ],
)
async def test_token_ids_are_a_recorded_gap_not_a_silent_pass(path: str, body: dict[str, Any], gaps: str) -> None:
    # Token ids carry input the model reads, with no text to scan: recorded, and the texts beside them scanned.
    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "redact"}))
    call = await parsed(body, path=path)
    await stage.request(call)
    assert call.reply is None
    (gap,) = [d for d in call.decisions if d.stage == "guardrails" and d.action == "skip"]
    assert gaps in gap.reason
    if isinstance(body.get("prompt"), list) and isinstance(body["prompt"][-1], str):
        assert call.request_json["prompt"][-1] == "mail <EMAIL_ADDRESS_1>"


@pytest.mark.parametrize(("on_error", "denied"), [("deny", True), ("allow", False)])
async def test_token_ids_under_a_block_action_fail_closed_unless_allowed(on_error: str, denied: bool) -> None:
    stage = Guardrails(make_settings(request={"CREDIT_CARD": "block"}, on_error=on_error))
    call = await parsed({"model": "m", "prompt": [1734, 374]}, path="/completions")
    await stage.request(call)
    assert (call.reply is not None) is denied
    if denied:
        assert call.reply is not None and call.reply.status == 503
        assert call.error_code == "guardrails_error" and call.outcome == "blocked"
    assert call.decisions[-1].stage == "guardrails" and call.decisions[-1].action == ("deny" if denied else "skip")


class Broken:
    def detect(self, text: str) -> Any:
        raise RuntimeError("analyzer exploded")

    def detect_many(self, texts: list[str]) -> Any:
        raise RuntimeError("analyzer exploded")


@pytest.mark.parametrize(("on_error", "denied"), [("deny", True), ("allow", False)])
async def test_an_analyzer_failure_fails_closed_unless_allowed(on_error: str, denied: bool) -> None:
    stage = Guardrails(make_settings(request={"CREDIT_CARD": "block"}, on_error=on_error))
    stage._detector = Broken()  # type: ignore[assignment]
    call = await parsed({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    await stage.request(call)
    assert (call.reply is not None) is denied
    if denied:
        assert call.reply is not None and call.reply.status == 503
        assert call.error_code == "guardrails_error" and call.outcome == "blocked"
    assert call.decisions[-1].stage == "guardrails"


async def test_a_failure_without_block_lets_the_call_through() -> None:
    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "redact"}))
    stage._detector = Broken()  # type: ignore[assignment]
    call = await parsed({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    await stage.request(call)
    assert call.reply is None and call.decisions[-1].action == "error"


async def test_actions_set_by_the_policy_win_over_the_defaults() -> None:
    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "log"}))
    call = await parsed({"model": "m", "messages": [{"role": "user", "content": f"mail {EMAIL}"}]})
    call.guardrails = GuardrailActions(request={"EMAIL_ADDRESS": "hash"}, rules=("hash-emails",))
    await stage.request(call)
    content = call.request_json["messages"][0]["content"]
    assert content.startswith("mail <EMAIL_ADDRESS#") and EMAIL not in content
    assert call.decisions[-1].rule == "hash-emails"


async def test_logged_values_are_left_upstream_but_masked_at_rest() -> None:
    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "log"}))
    call = await parsed({"model": "m", "messages": [{"role": "user", "content": f"mail {EMAIL}"}]})
    await stage.request(call)
    assert not call.request_changed and call.findings[0].action == "log"
    await stage.seal(call)
    assert EMAIL.encode() not in call.request_body and b"mail <EMAIL_ADDRESS>" in call.request_body


async def test_anthropic_tool_use_input_is_restored() -> None:
    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "redact"}))
    call = await parsed(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": f"mail {EMAIL}"}]},
        "anthropic",
        "/v1/messages",
    )
    await stage.request(call)
    assert call.request_json["messages"][0]["content"] == "mail <EMAIL_ADDRESS_1>"
    call.status, call.response_headers = 200, [("content-type", "application/json")]
    response = {"content": [{"type": "tool_use", "id": "t", "name": "send", "input": {"to": "<EMAIL_ADDRESS_1>"}}]}
    call.response_body = json.dumps(response).encode()
    await stage.response(call)
    assert call.agent_response_body is not None
    assert json.loads(call.agent_response_body)["content"][0]["input"] == {"to": EMAIL}
    await stage.seal(call)
    assert call.agent_response_body is None  # the stored copy never holds restored values
    assert EMAIL.encode() not in call.request_body


PHONE = "+1 415 555 0134"


async def test_a_response_is_rewritten_from_its_one_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent's copy (restored, the phone masked) and the store's (placeholder kept, phone masked)
    # are both written by the adapter from the body's one parse, which stays as the upstream sent it.
    adapter = ADAPTERS["openai"]
    reads: list[str] = []
    read_body = adapter.read_body
    monkeypatch.setattr(adapter, "read_body", lambda call: reads.append(call.id) or read_body(call))
    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "redact"}, response={"PHONE_NUMBER": "mask"}))
    call = await parsed({"model": "m", "messages": [{"role": "user", "content": f"mail {EMAIL}"}]})
    await stage.request(call)
    answer = {"choices": [{"index": 0, "message": {"content": f"Wrote to <EMAIL_ADDRESS_1>; call {PHONE}"}}]}
    call.status, call.response_headers = 200, [("content-type", "application/json")]
    call.response_body = upstream = json.dumps(answer).encode()
    await stage.response(call)
    assert call.agent_response_body is not None
    agent = json.loads(call.agent_response_body)["choices"][0]["message"]["content"]
    assert EMAIL in agent and PHONE not in agent
    assert adapter.response_view(call).message == answer  # the view still reads the upstream's answer
    await stage.seal(call)
    stored = json.loads(call.response_body)["choices"][0]["message"]["content"]
    assert call.response_body is not upstream and "<EMAIL_ADDRESS_1>" in stored and PHONE not in stored
    assert EMAIL not in stored and call.agent_response_body is None
    # The recorder reads the masked record through the call's view, not by parsing it again.
    assert adapter.response_view(call).parsed() == json.loads(call.response_body)
    assert reads == ["c1"]


async def test_a_response_with_nothing_to_change_reaches_the_agent_as_it_came() -> None:
    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "redact"}, response={"PHONE_NUMBER": "mask"}))
    call = await parsed({"model": "m", "messages": [{"role": "user", "content": f"mail {EMAIL}"}]})
    await stage.request(call)
    call.status, call.response_headers = 200, [("content-type", "application/json")]
    call.response_body = upstream = b'{"choices": [ {"index": 0, "message": {"content": "Sent."}} ]}'
    await stage.response(call)
    await stage.seal(call)
    # No rewritten copy: the agent gets, and the store keeps, the upstream's own bytes.
    assert call.agent_response_body is None and call.response_body is upstream
    assert call.decisions[-1].action == "allow"


async def test_seen_history_keeps_each_sessions_own_placeholders() -> None:
    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "redact", "PHONE_NUMBER": "mask"}))
    other = "sam.poe@acme-corp.io"
    turn = f"mail {EMAIL} or call 212-555-0187"
    first = await parsed({"model": "m", "messages": [{"role": "user", "content": turn}]})
    await stage.request(first)
    assert first.request_json["messages"][0]["content"] == "mail <EMAIL_ADDRESS_1> or call ***-***-****"
    # Another session already gave <EMAIL_ADDRESS_1> to another address: the seen turn is not reused as is.
    elsewhere = await parsed({"model": "m", "messages": [{"role": "user", "content": f"cc {other}"}]})
    elsewhere.session = "t"
    await stage.request(elsewhere)
    again = await parsed(
        {"model": "m", "messages": [{"role": "user", "content": f"cc {other}"}, {"role": "user", "content": turn}]}
    )
    again.session = "t"
    await stage.request(again)
    sent = [m["content"] for m in again.request_json["messages"]]
    assert sent == ["cc <EMAIL_ADDRESS_1>", "mail <EMAIL_ADDRESS_2> or call ***-***-****"]
    back = await parsed(
        {"model": "m", "messages": [{"role": "user", "content": turn}, {"role": "user", "content": "ok"}]}
    )
    await stage.request(back)
    assert back.request_json["messages"][0]["content"] == "mail <EMAIL_ADDRESS_1> or call ***-***-****"
    assert [f.entity for f in back.findings] == ["EMAIL_ADDRESS", "PHONE_NUMBER"]  # findings every turn, as before


async def test_seen_history_is_neither_analysed_nor_rewritten_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import interlock.guardrails.scanner as module

    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "redact"}))
    counting = CountingDetector(await stage.detector())
    stage._detector = counting  # type: ignore[assignment]
    rewrites: list[str] = []
    real_rewrite = module.rewrite
    monkeypatch.setattr(module, "rewrite", lambda text, *a: rewrites.append(text) or real_rewrite(text, *a))
    history = [{"role": "user", "content": f"mail {EMAIL}"}, {"role": "assistant", "content": "done"}]
    for turn in ("one", "two"):
        call = await parsed({"model": "m", "messages": [*history, {"role": "user", "content": turn}]})
        await stage.request(call)
        assert call.request_json["messages"][0]["content"] == "mail <EMAIL_ADDRESS_1>"
    assert counting.texts == [f"mail {EMAIL}", "done", "one", "two"]
    assert rewrites == [f"mail {EMAIL}", f"mail {EMAIL}"]  # upstream and stored forms, once
    monkeypatch.setattr(module, "SEEN_CHARS", 10)  # past the bound: forgotten, found by content hash
    call = await parsed({"model": "m", "messages": [*history, {"role": "user", "content": "three"}]})
    await stage.request(call)
    assert call.request_json["messages"][0]["content"] == "mail <EMAIL_ADDRESS_1>"
    assert stage._seen_chars <= 10 and counting.texts[-1] == "three"


async def test_the_stored_request_is_the_body_sent_unless_another_model_was_sent() -> None:
    from interlock.core.call import Attempt

    stage = Guardrails(make_settings(request={"EMAIL_ADDRESS": "redact"}))
    for model, as_sent in (("m", True), ("fallback-model", False)):
        call = await parsed({"model": "m", "messages": [{"role": "user", "content": f"mail {EMAIL}"}]})
        call.model = "m"
        await stage.request(call)
        sent = json.dumps(call.request_json, ensure_ascii=False, separators=(",", ":")).encode()
        call.upstream_body = sent.replace(b'"model":"m"', f'"model":"{model}"'.encode())
        call.attempts.append(Attempt("up", "http://upstream", model=model))
        await stage.seal(call)
        assert (call.request_body is call.upstream_body) is as_sent
        assert call.request_body == sent and EMAIL.encode() not in call.request_body
