"""Which workflow a call belongs to: a virtual key's, else `X-Interlock-Workflow`, else the agents'
shared W3C trace id (docs/workflows.md), kept on record and never sent upstream."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

from interlock.core.call import Call
from interlock.scripted import ScriptedUpstream
from interlock.tracing.backend import open_store
from interlock.tracing.schema import SCHEMA_VERSION
from tests.proxy.routing_support import collect_calls, finished

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
KEYS = {"vk-risk": {"agent": "risk-scorer", "workflow": "kyc-7"}, "vk-plain": {"agent": "plain"}}


def test_workflow_comes_from_key_then_header_then_trace(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(virtual_keys=KEYS)
    calls = collect_calls(running)
    url = running.url + "/openai/chat/completions"
    traceparent = f"00-{TRACE}-00f067aa0ba902b7-01"
    sent = [
        {"Authorization": "Bearer vk-risk", "traceparent": traceparent},  # the key's workflow wins over the trace
        {"Authorization": "Bearer vk-plain", "X-Interlock-Workflow": "wf-header", "traceparent": traceparent},
        {"Authorization": "Bearer vk-plain", "traceparent": traceparent, "X-Interlock-Session": "own-session"},
        {"Authorization": "Bearer vk-plain"},
    ]
    for headers in sent:
        assert httpx.post(url, json=CHAT, headers=headers).status_code == 200
    recorded = sorted(finished(calls, len(sent)), key=lambda c: c.started_at)
    assert [c.workflow for c in recorded] == ["kyc-7", "wf-header", TRACE, None]
    # A session of its own does not take the call out of the trace's workflow.
    assert recorded[2].session == "own-session"
    # interlock's own headers never reach the upstream.
    assert all("x-interlock-workflow" not in r.headers for r in upstream.requests)


def test_a_header_cannot_move_a_keyed_call_to_another_workflow(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(virtual_keys=KEYS)
    url = running.url + "/openai/chat/completions"
    other = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer vk-risk", "X-Interlock-Workflow": "other"})
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "identity_conflict"
    same = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer vk-risk", "X-Interlock-Workflow": "kyc-7"})
    assert same.status_code == 200
    assert len(upstream.requests) == 1


def test_the_workflow_round_trips_through_the_store(tmp_path: Path) -> None:
    call = Call(id="01", route="openai", protocol="openai", method="POST", path="/chat/completions")
    call.workflow = "kyc-7"
    assert Call.from_record(call.to_record()).workflow == "kyc-7"
    with open_store(tmp_path / "s.db") as store:
        store.add(call)
        stored = store.get_call("01")
        assert stored is not None and stored.workflow == "kyc-7"
        row = store.call_row("01")
        assert row is not None and row["workflow"] == "kyc-7"


def test_a_store_written_before_workflows_is_still_read(tmp_path: Path) -> None:
    # A version-1 file (an old incident bundle): read-only, it reads with no workflow; opened to
    # write, it is migrated and keeps its calls.
    path = tmp_path / "old.db"
    with open_store(path) as store:
        call = Call(id="01", route="openai", protocol="openai", method="POST", path="/chat/completions")
        store.add(call)
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX calls_workflow")
    conn.execute("ALTER TABLE calls DROP COLUMN workflow")
    conn.execute("ALTER TABLE calls DROP COLUMN rescued")  # added after workflow (version 3)
    conn.execute("ALTER TABLE calls DROP COLUMN cost_usd")  # and the cost (version 4)
    conn.execute("ALTER TABLE calls DROP COLUMN cost_source")
    for table in ("chain", "chain_checkpoints", "chain_start"):  # the tamper-evident chain (version 5)
        conn.execute(f"DROP TABLE {table}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with open_store(path, readonly=True) as old:
        assert [c.workflow for c in old.iter_calls()] == [None]
        assert old.list_calls()[0]["workflow"] is None
    with open_store(path) as migrated:
        row = migrated.call_row("01")
        assert row is not None and row["workflow"] is None
        assert migrated.schema_version == SCHEMA_VERSION
        chain = migrated.verify_chain()
        assert chain.ok and chain.unchained == 1  # recorded before the chain: counted, not a failure
