"""Byte-identical replay: what an agent got through interlock, live, is what it gets from the replay of
that recording, byte for byte: SSE streams (OpenAI, Anthropic, Gemini's `alt=sse`), Gemini's JSON
array, a non-streamed body, and streams interlock ended (a broken upstream: its error event, in the
framing the agent asked for). Played back through the proxy's own relay (`replay/playback.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import replay_server
from interlock.tracing.store import Store
from tests.conftest import routes_for

SESSION = "bytes"
GEMINI = "/gemini/v1beta/models/gemini-2.0-flash"


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def gemini(text: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


#: (what the upstream answers, the request path, its body)
EXCHANGES: list[tuple[Script, str, dict[str, Any]]] = [
    (Script(text="a plain answer"), "/openai/chat/completions", chat("plain")),
    (Script(text="a streamed answer", chunk_size=3), "/openai/chat/completions", chat("stream", stream=True)),
    (
        Script(text="bonjour à vous", chunk_size=2),
        "/anthropic/v1/messages",
        {"model": "claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": "salut"}], "stream": True},
    ),
    (Script(text="an array, element by element", chunk_size=4), f"{GEMINI}:streamGenerateContent", gemini("array")),
    (Script(text="server-sent", chunk_size=4), f"{GEMINI}:streamGenerateContent?alt=sse", gemini("sse")),
    (
        Script(text="cut short by a reset", chunk_size=3, reset_after=2),
        "/openai/chat/completions",
        chat("broken", stream=True),
    ),
    (Script(text="an array cut short", chunk_size=3, reset_after=2), f"{GEMINI}:streamGenerateContent", gemini("cut")),
]


def test_a_replay_gives_the_agent_the_bytes_it_got_live(
    make_interlock: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    routes = {**routes_for(upstream), "gemini": {"protocol": "gemini", "upstream": upstream.url, "api_key": "g-key"}}
    running = make_interlock(routes=routes)
    upstream.script(*(script for script, _, _ in EXCHANGES))
    headers = {"x-interlock-session": SESSION}
    live = [httpx.post(running.url + path, json=body, headers=headers, timeout=30) for _, path, body in EXCHANGES]
    running.recorded_calls(len(EXCHANGES), session=SESSION)
    bundle = tmp_path / "bytes.db"
    with Store(Path(running.settings.store.path)) as store:
        assert store.export(bundle, session=SESSION) == len(EXCHANGES)
    with replay_server(bundle) as replay:
        again = [httpx.post(replay.url + path, json=body, headers=headers, timeout=30) for _, path, body in EXCHANGES]
    replay.assert_no_divergence(all_used=True)
    for (_, path, _), before, after in zip(EXCHANGES, live, again, strict=True):
        assert (after.status_code, after.headers["content-type"]) == (
            before.status_code,
            before.headers["content-type"],
        )
        assert after.content == before.content, path
    # The broken ones ended with interlock's error event, and were replayed with it.
    assert b"stream_broken" in live[5].content and live[6].content.endswith(b"]")
