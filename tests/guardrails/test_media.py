"""Images, audio and files the guardrails cannot read (interlock has no OCR or speech recognition and
never fetches a URL), one rule for every protocol, driven by each provider's real SDK: under a request
guardrail the call goes on with a 'guardrails skip' decision naming each part and the text beside it
scanned as usual (`guardrails.media: skip`, the default), or is refused, nothing reaching the
upstream (`guardrails.media: deny`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import botocore.exceptions
import ollama
import openai
import pytest
from google import genai
from google.genai import errors, types

from interlock.scripted import ScriptedUpstream
from interlock.testing import Running, run_interlock, settings_for_test
from tests.conftest import closed_after_test, routes_for
from tests.proxy.test_bedrock import ROUTE_KEY, bedrock_route
from tests.proxy.test_bedrock import client as bedrock_client

EMAIL = "jane.roe@acme-corp.io"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(16)
PNG_B64 = "iVBORw0KGgoAAAAAAAAAAAAAAAAAAAAA"


def start(upstream: ScriptedUpstream, tmp: Path, media: str) -> Any:
    routes = {
        **routes_for(upstream),
        "gemini": {"protocol": "gemini", "upstream": upstream.url, "api_key": "google-real-key"},
        "bedrock": bedrock_route(upstream),
        "ollama": {"protocol": "ollama", "upstream": upstream.url},
    }
    data = {
        "routes": routes,
        "shutdown_grace": 2,
        "guardrails": {"request": {"EMAIL_ADDRESS": "redact"}, "media": media},
    }
    return run_interlock(settings_for_test(data, tmp))


@pytest.fixture(scope="module")
def skipping(upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with start(upstream_server, tmp_path_factory.mktemp("media-skip"), "skip") as running:
        yield running


@pytest.fixture(scope="module")
def denying(upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with start(upstream_server, tmp_path_factory.mktemp("media-deny"), "deny") as running:
        yield running


def headers(session: str) -> dict[str, str]:
    return {"X-Interlock-Session": session}


def openai_chat(running: Running, session: str) -> None:
    client = closed_after_test(
        openai.OpenAI(base_url=f"{running.url}/openai", api_key="x", max_retries=0, default_headers=headers(session))
    )
    content: list[Any] = [
        {"type": "text", "text": f"mail {EMAIL}"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},  # never fetched
        {"type": "input_audio", "input_audio": {"data": PNG_B64, "format": "wav"}},
    ]
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": content}])


def openai_responses(running: Running, session: str) -> None:
    client = closed_after_test(
        openai.OpenAI(base_url=f"{running.url}/openai", api_key="x", max_retries=0, default_headers=headers(session))
    )
    content: list[Any] = [
        {"type": "input_text", "text": f"mail {EMAIL}"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG_B64}", "detail": "auto"},
        {"type": "input_file", "file_id": "file-123"},
    ]
    client.responses.create(model="gpt-4o-mini", input=[{"role": "user", "content": content}])


def anthropic_messages(running: Running, session: str) -> None:
    client = closed_after_test(
        anthropic.Anthropic(
            base_url=f"{running.url}/anthropic", api_key="x", max_retries=0, default_headers=headers(session)
        )
    )
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    document = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [image]}
    messages: list[Any] = [
        {"role": "user", "content": [image, {"type": "text", "text": f"mail {EMAIL}"}, document]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [result]},
    ]
    client.messages.create(model="claude-3-5-haiku-latest", max_tokens=16, messages=messages)


def gemini_generate(running: Running, session: str) -> None:
    options = types.HttpOptions(
        base_url=f"{running.url}/gemini", headers=headers(session), retry_options=types.HttpRetryOptions(attempts=1)
    )
    with genai.Client(api_key="agent-key", http_options=options) as client:
        parts = [
            types.Part(text=f"mail {EMAIL}"),
            types.Part.from_bytes(data=PNG, mime_type="image/png"),
            types.Part.from_uri(file_uri="gs://bucket/a.pdf", mime_type="application/pdf"),
        ]
        client.models.generate_content(model="gemini-2.0-flash", contents=[types.Content(role="user", parts=parts)])


def bedrock_converse(running: Running, session: str) -> None:
    image = {"image": {"format": "png", "source": {"bytes": PNG}}}
    document = {"document": {"format": "pdf", "name": "a", "source": {"bytes": PNG}}}
    with bedrock_client(running) as client:

        def tag(request: Any, **_: Any) -> None:
            request.headers["X-Interlock-Session"] = session

        client.meta.events.register("before-sign.bedrock-runtime.*", tag)
        content = [{"text": f"mail {EMAIL}"}, image, {"toolResult": {"toolUseId": "t1", "content": [document]}}]
        client.converse(modelId="amazon.nova-lite-v1:0", messages=[{"role": "user", "content": content}])


def ollama_chat(running: Running, session: str) -> None:
    client = closed_after_test(ollama.Client(host=f"{running.url}/ollama", headers=headers(session)))
    client.chat(model="llava", messages=[{"role": "user", "content": f"mail {EMAIL}", "images": [PNG]}])


def texts(body: Any) -> str:
    """Every string in a JSON body, to find where the e-mail went."""
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        return " ".join(texts(v) for v in body.values())
    if isinstance(body, list):
        return " ".join(texts(v) for v in body)
    return ""


#: How each SDK sends a request with media parts, and the parts the decision names.
CASES: dict[str, tuple[Callable[[Running, str], None], list[str]]] = {
    "openai-chat": (openai_chat, ["messages[0].content[1] (image_url)", "messages[0].content[2] (input_audio)"]),
    "openai-responses": (openai_responses, ["input[0].content[1] (input_image)", "input[0].content[2] (input_file)"]),
    "anthropic": (
        anthropic_messages,
        [
            "messages[0].content[0] (image)",
            "messages[0].content[2] (document)",
            "messages[2].content[0].content[0] (image)",
        ],
    ),
    "gemini": (gemini_generate, ["contents[0].parts[1] (inlineData)", "contents[0].parts[2] (fileData)"]),
    "bedrock": (
        bedrock_converse,
        ["messages[0].content[1] (image)", "messages[0].content[2].toolResult.content[0] (document)"],
    ),
    "ollama": (ollama_chat, ["messages[0].images (1 images)"]),
}


@contextlib.contextmanager
def signed(upstream: ScriptedUpstream, name: str) -> Iterator[None]:
    if name == "bedrock":  # the scripted provider checks interlock's SigV4 signature with the route's key
        upstream.aws_credentials = ROUTE_KEY
    yield


@pytest.mark.parametrize("name", CASES)
def test_media_is_a_recorded_skip_and_the_text_beside_it_is_redacted(
    skipping: Running, upstream: ScriptedUpstream, name: str
) -> None:
    send, parts = CASES[name]
    with signed(upstream, name):
        send(skipping, f"media-{name}")
    (sent,) = upstream.requests
    body = sent.json()
    assert EMAIL not in texts(body) and "<EMAIL_ADDRESS_1>" in texts(body)
    (call,) = skipping.recorded_calls(1, session=f"media-{name}")
    assert call.outcome == "ok"
    (skip,) = [d for d in call.decisions if d.stage == "guardrails" and d.action == "skip"]
    for part in parts:
        assert part in skip.reason


def status_of(exc: BaseException) -> int | None:
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        return exc.status_code
    if isinstance(exc, errors.APIError):
        return exc.code
    if isinstance(exc, botocore.exceptions.ClientError):
        return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    if isinstance(exc, ollama.ResponseError):
        return exc.status_code
    return None


@pytest.mark.parametrize("name", CASES)
def test_media_deny_refuses_the_call_before_the_upstream(
    denying: Running, upstream: ScriptedUpstream, name: str
) -> None:
    send, parts = CASES[name]
    with signed(upstream, name), pytest.raises(Exception) as refused:
        send(denying, f"media-deny-{name}")
    assert status_of(refused.value) == 503
    assert upstream.requests == []
    # (boto3 tries a 503 again whatever its retry setting: each attempt is refused alike)
    call = denying.recorded_calls(1, session=f"media-deny-{name}")[0]
    assert (call.outcome, call.error_code) == ("blocked", "guardrails_error")
    (deny,) = [d for d in call.decisions if d.stage == "guardrails" and d.action == "deny"]
    assert all(part in deny.reason for part in parts)


def test_media_without_a_request_guardrail_records_nothing(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    # No request rule applies: nothing is scanned, so no part is "skipped" (and `deny` refuses nothing).
    running = make_interlock(guardrails={"response": {"CREDIT_CARD": "redact"}, "media": "deny"})
    openai_chat(running, "media-none")
    (call,) = running.recorded_calls(1, session="media-none")
    assert call.outcome == "ok"
    assert not [d for d in call.decisions if d.stage == "guardrails" and d.action in ("skip", "deny")]
