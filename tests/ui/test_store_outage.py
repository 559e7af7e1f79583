"""The UI during a store outage (a PostgreSQL server down): every page that reads the store answers
503 with a readable page saying why, as the JSON API answers 503 `store_unavailable`; never a 200
page with the outage inside it, nor a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from interlock.scripted import ScriptedUpstream
from tests.proxy.routing_support import openai_client

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.slow
def test_pages_answer_503_with_a_readable_page_while_the_store_is_down(
    make_interlock: Any, postgres_server: Any, upstream: ScriptedUpstream
) -> None:
    url = postgres_server.database("ui_outage")
    running = make_interlock(store={"url": url})
    openai_client(running).chat.completions.create(
        model="gpt-4o-mini",
        messages=HI,  # type: ignore[arg-type]
        extra_headers={"X-Interlock-Session": "s-outage"},
    )
    recorder = running.runtime.recorder
    assert recorder is not None and recorder.flush()
    (call,) = running.runtime.store.list_calls(limit=5)
    pages = [
        "/",
        "/?fragment=1",  # the live refresh of the rows: refused too, so the page keeps its rows
        "/calls",
        "/session?id=s-outage",
        f"/call/{call['id']}",
        "/agents",
        "/workflows",
        "/audit",
    ]
    admin = running.admin_url
    postgres_server.stop()
    try:
        for path in pages:
            page = httpx.get(admin + path, timeout=60)
            assert page.status_code == 503, (path, page.status_code)
            assert page.headers["content-type"].startswith("text/html"), path
            assert "ui_outage" in page.text, path  # the store's own reason, which names it
        api = httpx.get(admin + "/api/calls", timeout=60)
        assert api.status_code == 503 and api.json()["error"]["code"] == "store_unavailable"
    finally:
        postgres_server.start()
