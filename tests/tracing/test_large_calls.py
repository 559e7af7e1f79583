"""One large stream never stalls recording (issue 17, item 6): its rows are built in linear time and
written in pieces by their own thread while the writer keeps writing everyone else's calls."""

from __future__ import annotations

import time
from typing import Any

import httpx

from interlock.scripted import ScriptedUpstream
from interlock.tracing.store import Store
from tests.conftest import routes_for
from tests.proxy.raw_upstream import RawUpstream, chunks
from tests.proxy.routing_support import CHAT, wait_for
from tests.proxy.test_bounds import SSE_HEAD, chat_events

MB = 1024 * 1024


def test_20_small_calls_after_a_128_mb_stream_are_recorded_within_2_s(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    with RawUpstream(chunks(SSE_HEAD, lambda: chat_events(128 * MB))) as raw:
        routes = {**routes_for(upstream), "big": {"protocol": "openai", "upstream": raw.url + "/v1"}}
        running = make_interlock(routes=routes)
        recorder = running.runtime.recorder
        with httpx.stream("POST", running.url + "/big/chat/completions", json={**CHAT, "stream": True}) as response:
            assert sum(len(part) for part in response.iter_raw()) > 128 * MB
        with httpx.Client(base_url=running.url) as client:
            for i in range(20):
                body = {**CHAT, "messages": [{"role": "user", "content": f"small {i}"}]}
                assert client.post("/openai/chat/completions", json=body).status_code == 200
        answered = time.monotonic()
        store: Store = running.runtime.store
        # Generous machinery (10 s), the bound asserted on what was measured.
        wait_for(lambda: store.count_calls(route="openai") == 20, timeout=10)
        took = time.monotonic() - answered
        print(f"20 small calls recorded {took:.3f} s after their answers (after a 128 MB stream)")
        assert took < 2.0, f"20 small calls recorded {took:.2f} s after their answers"
        # The big one is written too, whole: its head and tail, and the marker of what was dropped.
        wait_for(lambda: store.count_calls(route="big") == 1, timeout=60)
        (big,) = store.iter_calls(route="big")
        assert big.outcome == "ok" and big.meta["record_cut"]["upstream"]["dropped_bytes"] > 90 * MB
        assert big.chunks[-1].data.endswith(b"data: [DONE]\n\n")
        wait_for(lambda: recorder.counters()["large_calls"] == 1)  # counted just after its commit
        assert recorder.write_errors == 0
        # Its chunks went in by pieces before its row: its link still covers them (docs/audit.md).
        chain = store.verify_chain()
        assert chain.ok and chain.checked == 21
