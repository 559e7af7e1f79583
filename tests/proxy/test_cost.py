"""Cost on every call with no configuration (issue 22): the genai-prices catalogue prices chat,
Responses, Anthropic messages and embeddings, streamed and not, cached and reasoning tokens
included; `prices:` overrides it; the cost is recorded, summed per session and agent, and served by
the admin API. Expected values come from genai-prices' own API, never hard-coded numbers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import genai_prices
import httpx
import openai
import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.core.call import Call
from interlock.scripted import ScriptedUpstream
from interlock.scripted.replies import Script
from interlock.testing import Running
from tests.proxy.routing_support import anthropic_client, collect_calls, finished, openai_client

HI = [{"role": "user", "content": "hi"}]
SOURCE = f"genai-prices {genai_prices.__version__}"
#: Numbers with every kind of token in play: a cached prefix, a cache write, reasoning.
USAGE = Script(input_tokens=1200, output_tokens=300, cached_tokens=1000, cache_write_tokens=0, reasoning_tokens=120)


def catalogue_price(model: str, provider: str, **tokens: int) -> float:
    usage = genai_prices.Usage(**{k: v for k, v in tokens.items() if v})
    price: Decimal = genai_prices.calc_price(usage, model, provider_id=provider).total_price
    return float(price)


@pytest.fixture
def running(make_interlock: Any) -> Running:
    return make_interlock()  # type: ignore[no-any-return]


@pytest.fixture
def calls(running: Running) -> list[Call]:
    return collect_calls(running)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions_cost_the_catalogue_price_cached_and_reasoning_included(
    running: Running, calls: list[Call], upstream: ScriptedUpstream, stream: bool
) -> None:
    upstream.script(USAGE)
    client = openai_client(running)
    if stream:
        chunks = client.chat.completions.create(
            model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        assert [c for c in chunks]
    else:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    (call,) = finished(calls)
    expected = catalogue_price(
        "gpt-4o-mini",
        "openai",
        input_tokens=1200,
        cache_read_tokens=1000,
        output_tokens=300,
        output_reasoning_tokens=120,
    )
    assert call.cost_usd == pytest.approx(expected, rel=1e-9) and call.cost_source == SOURCE
    # Cached tokens are cheaper: the price is below the same tokens uncached.
    assert call.cost_usd < catalogue_price("gpt-4o-mini", "openai", input_tokens=1200, output_tokens=300)
    assert call.meta["usage"] == {"input": 1200, "output": 300, "cache_read": 1000, "cache_write": 0, "reasoning": 120}
    row = running.recorded_row(call.id)
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-9) and row["cost_source"] == SOURCE


@pytest.mark.parametrize("stream", [False, True])
def test_responses_api_costs_the_catalogue_price(
    running: Running, calls: list[Call], upstream: ScriptedUpstream, stream: bool
) -> None:
    upstream.script(USAGE)
    client = openai_client(running)
    if stream:
        with client.responses.stream(model="gpt-4.1", input="hi") as events:
            assert events.get_final_response().usage is not None
    else:
        client.responses.create(model="gpt-4.1", input="hi")
    (call,) = finished(calls)
    expected = catalogue_price(
        "gpt-4.1", "openai", input_tokens=1200, cache_read_tokens=1000, output_tokens=300, output_reasoning_tokens=120
    )
    assert call.cost_usd == pytest.approx(expected, rel=1e-9) and call.cost_source == SOURCE


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages_cost_cache_reads_and_writes_at_their_prices(
    running: Running, calls: list[Call], upstream: ScriptedUpstream, stream: bool
) -> None:
    upstream.script(Script(input_tokens=200, output_tokens=300, cached_tokens=1000, cache_write_tokens=500))
    client = anthropic_client(running)
    model = "claude-sonnet-4-5"
    if stream:
        with client.messages.stream(model=model, max_tokens=512, messages=HI) as events:  # type: ignore[arg-type]
            assert events.get_final_message().usage.cache_read_input_tokens == 1000
    else:
        client.messages.create(model=model, max_tokens=512, messages=HI)  # type: ignore[arg-type]
    (call,) = finished(calls)
    # Anthropic's input_tokens exclude the cache: the catalogue counts all input, cache reads and writes as parts.
    expected = catalogue_price(
        model, "anthropic", input_tokens=1700, cache_read_tokens=1000, cache_write_tokens=500, output_tokens=300
    )
    assert call.cost_usd == pytest.approx(expected, rel=1e-9) and call.cost_source == SOURCE
    assert (call.input_tokens, call.output_tokens) == (200, 300)  # as the provider reports them


def test_embeddings_are_priced_too(running: Running, calls: list[Call]) -> None:
    reply = openai_client(running).embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    (call,) = finished(calls)
    tokens = reply.usage.prompt_tokens
    assert call.cost_usd == pytest.approx(catalogue_price("text-embedding-3-small", "openai", input_tokens=tokens))
    assert call.cost_source == SOURCE


def test_a_model_the_catalogue_lacks_is_unpriced_and_prices_override(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running = make_interlock(prices={"local-*": {"input": 1.0, "output": 2.0, "cached_input": 0.5}})
    calls = collect_calls(running)
    client = openai_client(running)
    client.chat.completions.create(model="mystery-model", messages=HI)  # type: ignore[arg-type]
    upstream.script(USAGE)
    client.chat.completions.create(model="local-llama", messages=HI)  # type: ignore[arg-type]
    unpriced, local = finished(calls, 2)
    assert (unpriced.cost_usd, unpriced.cost_source) == (None, "unpriced")
    assert local.cost_source == "prices"
    assert local.cost_usd == pytest.approx((200 * 1.0 + 1000 * 0.5 + 300 * 2.0) / 1e6)


def test_counting_tokens_is_free_and_said_so(running: Running, calls: list[Call], upstream: ScriptedUpstream) -> None:
    # Anthropic's count_tokens answers a count, not usage, and is not billed: $0 from source `free`
    # with the reason on the record, not left without a price.
    upstream.script(Script(input_tokens=42))
    counted = anthropic_client(running).messages.count_tokens(model="claude-sonnet-4-5", messages=HI)  # type: ignore[arg-type]
    assert counted.input_tokens == 42
    (call,) = finished(calls)
    assert (call.cost_usd, call.cost_source) == (0.0, "free")
    assert (call.input_tokens, call.output_tokens) == (0, 0)  # nothing for a token limit to count
    assert call.meta["cost_reason"]


def test_a_model_answer_without_usage_is_estimated_and_priced_with_the_reason(
    running: Running, calls: list[Call], upstream: ScriptedUpstream
) -> None:
    # An OpenAI-compatible server's answer without `usage`: estimated (4 characters a token) and
    # priced, marked so, never a silent $0 through a budget (as a stream without usage:
    # tests/proxy/test_stream_usage.py).
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    }
    upstream.script(Script(body=json.dumps(answer).encode(), headers={"content-type": "application/json"}))
    assert openai_client(running).chat.completions.create(model="gpt-4o-mini", messages=HI).choices  # type: ignore[arg-type]
    (call,) = finished(calls)
    assert call.meta["usage_estimated"] is True and call.meta["cost_reason"]
    assert call.output_tokens == 1  # "hi": 2 characters, a token
    assert call.input_tokens is not None and call.input_tokens >= 1
    assert call.cost_source not in (None, "unpriced") and call.cost_usd is not None and call.cost_usd > 0


def test_an_error_is_not_priced(running: Running, calls: list[Call], upstream: ScriptedUpstream) -> None:
    upstream.script(Script(status=400))
    with pytest.raises(openai.BadRequestError):
        openai_client(running).chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    (call,) = finished(calls)
    assert (call.cost_usd, call.cost_source) == (None, None)


@pytest.fixture
def admin(running: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.admin_url, timeout=30) as client:
        yield client


def test_sessions_and_agents_sum_cost_in_the_admin_api(
    running: Running, calls: list[Call], upstream: ScriptedUpstream, admin: httpx.Client
) -> None:
    upstream.script(USAGE, USAGE, Script(input_tokens=10, output_tokens=1))
    for session in ("dear", "dear", "cheap"):
        client = openai_client(running)
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HI,  # type: ignore[arg-type]
            extra_headers={"X-Interlock-Session": session, "X-Interlock-Agent": "coder"},
        )
    finished(calls, 3)
    recorder = running.runtime.recorder
    assert recorder is not None and recorder.flush()
    one = catalogue_price(
        "gpt-4o-mini",
        "openai",
        input_tokens=1200,
        cache_read_tokens=1000,
        output_tokens=300,
        output_reasoning_tokens=120,
    )
    sessions = admin.get("/api/sessions", params={"order": "cost"}).json()["sessions"]
    assert [s["session"] for s in sessions] == ["dear", "cheap"]
    assert sessions[0]["cost_usd"] == pytest.approx(2 * one)
    agents = {a["agent"]: a for a in admin.get("/api/agents").json()["agents"]}
    assert agents["coder"]["cost_usd"] == pytest.approx(sum(c.cost_usd or 0 for c in calls))
    detail = admin.get(f"/api/calls/{calls[0].id}").json()
    assert detail["cost_usd"] == pytest.approx(one) and detail["cost_source"] == SOURCE
    assert admin.get("/api/sessions", params={"order": "sideways"}).status_code == 400


def test_traces_ls_and_show_print_the_cost(running: Running, calls: list[Call], upstream: ScriptedUpstream) -> None:
    upstream.script(USAGE)
    openai_client(running).chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    (call,) = finished(calls)
    running.recorded_row(call.id)
    store = running.settings.store.path
    runner = CliRunner()
    listed = runner.invoke(main, ["traces", "ls", "--store", store, "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = [json.loads(line) for line in listed.output.splitlines()]
    assert row["cost_usd"] == pytest.approx(call.cost_usd) and row["cost_source"] == SOURCE
    table = runner.invoke(main, ["traces", "ls", "--store", store]).output
    header, line = table.splitlines()
    assert header.split()[-1] == "COST" and line.split()[-1] == f"${call.cost_usd:.3g}"
    shown = runner.invoke(main, ["traces", "show", call.id, "--store", store]).output
    assert f"price from {SOURCE}" in shown


def test_mcp_tool_calls_cost_zero_or_their_configured_price() -> None:
    from interlock.core.views import RequestView
    from interlock.prices import Pricing

    pricing = Pricing(tool_prices={"search_*": 0.002})
    call = Call(id="c", route="tools", protocol="mcp", method="POST", path="/mcp")
    call.view = RequestView("tools/call", tool_name="search_web")
    assert pricing.price_call(call, None) == pricing.tool_cost("search_web")
    assert (pricing.tool_cost("search_web").usd, pricing.tool_cost("search_web").source) == (0.002, "tool_prices")
    call.view = RequestView("tools/call", tool_name="read_file")
    cost = pricing.price_call(call, None)
    assert cost is not None and (cost.usd, cost.source) == (0.0, "mcp")


def test_the_catalogue_is_the_bundled_one_and_never_updated(
    running: Running, calls: list[Call], upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing phones home: pricing never starts genai-prices' updater, never sets a fetched snapshot."""
    from genai_prices import data_snapshot, update_prices

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("genai-prices' updater must never run inside interlock")

    monkeypatch.setattr(update_prices.UpdatePrices, "start", refuse)
    monkeypatch.setattr(update_prices.UpdatePrices, "__enter__", refuse)
    upstream.script(USAGE)
    openai_client(running).chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    (call,) = finished(calls)
    assert call.cost_source == SOURCE
    assert data_snapshot._custom_snapshot is None  # still the data shipped in the package
