"""OpenAI chat streams the agent sends without `stream_options.include_usage` (the openai SDK's
default) are priced and counted against budgets, never a $0 pass: interlock asks the upstream for the
usage and does not relay the extra usage chunk (`upstreams[].stream_usage: inject`, the default), and
estimates the usage where the stream still carries none (`stream_usage: off`), marked
`usage_estimated`. Real openai SDK clients against the scripted provider's exact wire format."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from interlock.cli import apply_overrides
from interlock.config import Settings, load_settings
from interlock.core.call import Call
from interlock.proxy.usage import CHARS_PER_TOKEN
from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running, replay_server, run_interlock, settings_for_test
from interlock.yamlsource import SourceError
from tests.sdk_errors import protocol_error

API_VERSION = "2024-10-21"
#: Per agent (`per: agent`): each test's agent has a budget of its own.
POLICY = """
rules:
  - name: thrifty
    limits: {budget_usd_per_day: 0.02}
"""


@pytest.fixture(scope="module")
def running(upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One interlock for the module: an OpenAI route (asks for usage), an OpenAI-compatible route
    whose upstream must not be asked (`stream_usage: off`), an Azure route; a money budget per agent."""
    tmp = tmp_path_factory.mktemp("stream-usage")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "policy.yaml").write_text(textwrap.dedent(POLICY))
    base = upstream_server.url + "/v1"
    data = {
        "routes": {
            "openai": {"protocol": "openai", "upstream": base, "api_key": "sk-real"},
            "compat": {
                "protocol": "openai",
                "upstreams": [{"url": base, "api_key": "sk-real", "stream_usage": "off"}],
            },
            "azure": {"protocol": "azure_openai", "upstream": upstream_server.url, "api_key": "azure-key"},
        },
        "shutdown_grace": 2,
        "policies": [str(tmp / "policies")],
    }
    with run_interlock(settings_for_test(data, tmp)) as ran:
        yield ran


def recorded(running: Running, session: str, count: int) -> list[Call]:
    """The session's calls, newest first, once `count` are recorded."""
    recorder, store = running.runtime.recorder, running.runtime.store
    assert recorder is not None
    deadline = time.monotonic() + 60
    while True:
        assert recorder.flush()
        rows = store.list_calls(session=session, limit=100)
        if len(rows) >= count:
            calls = [store.get_call(row["id"]) for row in rows]
            assert all(c is not None for c in calls)
            return calls  # type: ignore[return-value]
        assert time.monotonic() < deadline, "calls were not recorded in time"
        time.sleep(0.01)


def sdk(running: Running, session: str, route: str = "openai") -> openai.OpenAI:
    headers = {"X-Interlock-Agent": f"agent-{session}", "X-Interlock-Session": session}
    return openai.OpenAI(base_url=f"{running.url}/{route}", api_key="sk-agent", max_retries=0, default_headers=headers)


def ask(client: openai.OpenAI, text: str = "hi", model: str = "gpt-4o-mini", **options: Any) -> list[Any]:
    return list(
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], stream=True, **options
        )
    )


def sent_upstream(upstream: ScriptedUpstream) -> dict[str, Any]:
    body = upstream.requests[-1].json()
    assert isinstance(body, dict)
    return body


def usage_chunks(stream: bytes) -> list[bytes]:
    """The SSE events of a chat stream that are its usage chunk (no choices, a usage object)."""
    found = []
    for event in (e + b"\n\n" for e in stream.split(b"\n\n") if e.startswith(b"data: {")):
        data = json.loads(event[6:])
        if data.get("choices") == [] and isinstance(data.get("usage"), dict):
            found.append(event)
    return found


def test_a_default_stream_is_asked_for_usage_the_agent_never_sees(running: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="four words of answer", input_tokens=40, output_tokens=9))
    with sdk(running, "default") as client:
        chunks = ask(client)
    # The agent's chunks are those it gets without the ask: each has a choice, none a usage.
    assert chunks and all(c.choices and c.usage is None and "usage" not in c.model_fields_set for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "four words of answer"
    assert sent_upstream(upstream)["stream_options"] == {"include_usage": True}
    (call,) = recorded(running, "default", 1)
    # Real usage and cost, from the usage chunk the upstream sent (kept in the record's stream).
    assert (call.input_tokens, call.output_tokens) == (40, 9)
    assert call.cost_usd is not None and call.cost_usd > 0 and call.cost_source != "unpriced"
    assert call.meta["stream_usage"] == "asked" and "usage_estimated" not in call.meta
    assert usage_chunks(b"".join(c.data for c in call.chunks))
    # The record is of the agent's call: its request as sent; the ask alone adds no upstream body.
    assert "stream_options" not in json.loads(call.request_body) and call.upstream_body is None


def test_the_agent_gets_the_bytes_it_would_get_unasked(running: Running, upstream: ScriptedUpstream) -> None:
    # Without interlock: the stream the upstream sends a request without `stream_options`.
    upstream.script(Script(text="raw bytes"), Script(text="raw bytes"))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": True}
    direct = httpx.post(upstream.url + "/v1/chat/completions", json=body, timeout=30)
    headers = {"X-Interlock-Session": "raw", "Authorization": "Bearer sk-agent"}
    proxied = httpx.post(f"{running.url}/openai/chat/completions", json=body, headers=headers, timeout=30)
    assert proxied.status_code == 200 and direct.status_code == 200
    # Byte for byte: no usage chunk, and no `"usage": null` in the other chunks.
    assert proxied.content == direct.content and b'"usage"' not in proxied.content
    (call,) = recorded(running, "raw", 1)
    assert len(usage_chunks(b"".join(c.data for c in call.chunks))) == 1  # the record keeps the upstream's


def test_a_budget_counts_a_default_stream_and_refuses_the_next_call(
    running: Running, upstream: ScriptedUpstream
) -> None:
    # A million input tokens of gpt-4o-mini cost $0.15 at the catalogue's price: over the $0.02 budget.
    upstream.script(Script(text="expensive", input_tokens=1_000_000))
    with sdk(running, "budget") as client:
        ask(client)
        recorded(running, "budget", 1)
        with pytest.raises(openai.RateLimitError) as refused:
            ask(client, "again")
    assert protocol_error(refused.value)["code"] == "budget_exceeded"
    assert all(r.json()["messages"][0]["content"] != "again" for r in upstream.requests)


def test_an_agent_that_asked_for_usage_gets_its_usage_chunk(running: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="mine", input_tokens=12, output_tokens=3))
    with sdk(running, "asked") as client:
        chunks = ask(client, stream_options={"include_usage": True})
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 3)
    assert sent_upstream(upstream)["stream_options"] == {"include_usage": True}
    (call,) = recorded(running, "asked", 1)
    assert "stream_usage" not in call.meta and call.agent_chunks is None
    assert (call.input_tokens, call.output_tokens) == (12, 3)


def test_stream_usage_off_estimates_the_usage_and_the_budget_counts_it(
    running: Running, upstream: ScriptedUpstream
) -> None:
    # 40,000 characters of prompt: ~10,000 tokens of gpt-4o at $2.50 a million, over the budget.
    prompt = "word " * 8000
    upstream.script(Script(text="an answer of 28 characters..", input_tokens=999, output_tokens=999))
    with sdk(running, "off", route="compat") as client:
        chunks = ask(client, prompt, model="gpt-4o")
        assert all(c.choices for c in chunks)
        assert "stream_options" not in sent_upstream(upstream)  # this upstream is never asked
        (call,) = recorded(running, "off", 1)
        assert call.meta["usage_estimated"] is True and call.meta["cost_reason"]
        assert "stream_usage" not in call.meta
        # Four characters a token, rounded up, of the prompt and of the text streamed.
        assert (call.input_tokens, call.output_tokens) == (-(-len(prompt) // CHARS_PER_TOKEN), 7)
        assert call.cost_usd is not None and call.cost_usd > 0.02 and call.cost_source != "unpriced"
        with pytest.raises(openai.RateLimitError) as refused:
            ask(client, "again", model="gpt-4o")
    assert protocol_error(refused.value)["code"] == "budget_exceeded"


def test_an_azure_stream_is_asked_too(running: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="azure answer", input_tokens=21, output_tokens=4))
    headers = {"X-Interlock-Session": "azure"}
    client = openai.AzureOpenAI(
        azure_endpoint=f"{running.url}/azure",
        api_version=API_VERSION,
        api_key="placeholder",
        max_retries=0,
        default_headers=headers,
    )
    with client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True
        )
        chunks = list(stream)
    # Azure's opening chunk holds only the prompt's filter results (no choices), as without the ask;
    # the usage chunk is not relayed.
    assert chunks[0].choices == [] and all(c.choices for c in chunks[1:])
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks[1:]) == "azure answer"
    assert sent_upstream(upstream)["stream_options"] == {"include_usage": True}
    (call,) = recorded(running, "azure", 1)
    assert (call.input_tokens, call.output_tokens) == (21, 4) and call.cost_usd is not None
    assert call.meta["stream_usage"] == "asked"


def test_a_replay_gives_the_agent_the_same_bytes(running: Running, upstream: ScriptedUpstream, tmp_path: Path) -> None:
    upstream.script(Script(text="replayed answer"))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": True}
    headers = {"X-Interlock-Session": "replay", "Authorization": "Bearer sk-agent"}
    live = httpx.post(f"{running.url}/openai/chat/completions", json=body, headers=headers, timeout=30)
    assert live.status_code == 200 and not usage_chunks(live.content)
    recorded(running, "replay", 1)
    bundle = tmp_path / "replay.db"
    assert running.runtime.store.export(bundle, session="replay") == 1
    served = len(upstream.requests)
    with replay_server(bundle) as replay:
        again = httpx.post(f"{replay.base_url('openai')}/chat/completions", json=body, headers=headers, timeout=30)
    assert again.status_code == 200 and again.content == live.content
    replay.assert_no_divergence(all_used=True)
    assert len(upstream.requests) == served


def test_stream_usage_is_refused_on_a_route_that_cannot_ask(tmp_path: Path) -> None:
    config = tmp_path / "interlock.yaml"
    config.write_text(
        "routes:\n"
        "  claude:\n"
        "    protocol: anthropic\n"
        "    upstreams:\n"
        "      - url: https://api.anthropic.com\n"
        "        stream_usage: off\n"
    )
    with pytest.raises(SourceError) as refused:
        load_settings(config)
    assert refused.value.line is not None and "stream_usage" in str(refused.value)


def test_a_route_that_cannot_ask_survives_the_settings_round_trip_of_serve_s_flags() -> None:
    # `serve --port/--workers/--store` validate a dump of the settings, every field given in it.
    settings = Settings.model_validate({"routes": {"claude": {"protocol": "anthropic", "upstream": "http://x"}}})
    assert apply_overrides(settings, port=5000).listen.port == 5000
