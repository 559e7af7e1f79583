"""Helpers shared by the routing, retry and breaker tests, and the provider tests."""

from __future__ import annotations

import html
import re
from typing import Any

import anthropic
import httpx
import openai

from interlock.core.call import Call
from interlock.testing import Running, free_port, wait_for
from tests.conftest import closed_after_test

#: Retries that keep the suite fast: backoffs of a few milliseconds, Retry-After capped at 50 ms.
FAST_RETRY: dict[str, Any] = {"attempts": 3, "backoff_initial": 0.004, "backoff_max": 0.008, "retry_after_max": 0.05}


def collect_calls(running: Running) -> list[Call]:
    """Every finished call, as the `done` hook sees it (appended on interlock's loop)."""
    calls: list[Call] = []

    async def done(call: Call) -> None:
        calls.append(call)

    running.runtime.pipeline.hooks["done"].append(done)
    return calls


def finished(calls: list[Call], count: int = 1) -> list[Call]:
    wait_for(lambda: len(calls) >= count)
    return calls


def openai_client(running: Running, route: str = "openai", max_retries: int = 0, **options: Any) -> openai.OpenAI:
    """An openai SDK client of interlock's `route` (closed when the test ends); `options` go to it."""
    options.setdefault("api_key", "sk-agent")
    return closed_after_test(openai.OpenAI(base_url=f"{running.url}/{route}", max_retries=max_retries, **options))


def anthropic_client(
    running: Running, route: str = "anthropic", max_retries: int = 0, **options: Any
) -> anthropic.Anthropic:
    """An anthropic SDK client of interlock's `route` (closed when the test ends); `options` go to it."""
    options.setdefault("api_key", "sk-agent")
    return closed_after_test(anthropic.Anthropic(base_url=f"{running.url}/{route}", max_retries=max_retries, **options))


def closed_url() -> str:
    """A loopback URL where nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


def route(protocol: str = "openai", upstreams: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"protocol": protocol, "upstreams": upstreams or [], "retry": dict(FAST_RETRY)}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def upstreams_state(running: Running) -> dict[str, Any]:
    return httpx.get(running.admin_url + "/api/upstreams").json()  # type: ignore[no-any-return]


def breaker_state(running: Running, route_name: str, upstream: str, model: str | None = None) -> str:
    """The state of an upstream's upstream-wide (transport) breaker, or of its breaker for `model`."""
    for entry in upstreams_state(running)["routes"][route_name]["upstreams"]:
        if entry["name"] == upstream:
            if model is not None:
                return str(entry["models"][model]["state"]) if model in entry["models"] else "closed"
            return str(entry["breaker"]["state"])
    raise KeyError(upstream)


CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


def conversation(running: Running, call_id: str) -> list[tuple[str, str]]:
    """(role classes, text) of each message in the call page's Conversation section."""
    page = httpx.get(f"{running.admin_url}/call/{call_id}")
    assert page.status_code == 200
    section = page.text.split('<section id="conversation">', 1)[1].split("</section>", 1)[0]
    found = re.findall(r'<li class="msg ([a-z ]+)">.*?<div class="text">(.*?)</div>', section, re.S)
    return [(role, html.unescape(re.sub("<[^>]+>", "", text))) for role, text in found]
