"""Reading the record: the admin JSON API and `interlock traces` return the calls interlock recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.core.call import Attempt, Call, Chunk, Decision, Finding, new_id
from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running, make_call, wait_for
from interlock.tracing.store import Store


def send(running: Running, text: str, agent: str = "planner", session: str | None = "s1", stream: bool = False) -> None:
    headers = {"x-interlock-agent": agent}
    if session:
        headers["x-interlock-session"] = session
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "stream": stream}
    response = httpx.post(running.url + "/openai/chat/completions", json=body, headers=headers)
    assert response.status_code == 200


def settle(running: Running, count: int) -> None:
    wait_for(lambda: running.runtime.store.count_calls() >= count, what=f"{count} calls recorded")


@pytest.fixture
def busy(interlock: Running, upstream: ScriptedUpstream) -> Running:
    send(interlock, "first about owls", agent="planner", session="s1")
    send(interlock, "second about cats", agent="coder", session="s1")
    upstream.script(Script(text="streamed reply", chunk_size=4))
    send(interlock, "third about owls", agent="coder", session="s2", stream=True)
    send(interlock, "fourth, no session", agent="coder", session=None)
    assert httpx.post(interlock.url + "/openai/chat/completions", content=b"nope").status_code == 400
    settle(interlock, 5)
    return interlock


def api(running: Running, path: str, status: int = 200, **params: Any) -> Any:
    response = httpx.get(running.admin_url + path, params=params)
    assert response.status_code == status, response.text
    return response.json()


def test_api_lists_filters_and_pages_calls(busy: Running) -> None:
    everything = api(busy, "/api/calls")
    assert len(everything["calls"]) == 5 and everything["next"] is None
    ids = [c["id"] for c in everything["calls"]]
    assert ids == sorted(ids, reverse=True)
    page = api(busy, "/api/calls", limit=2)
    assert [c["id"] for c in page["calls"]] == ids[:2] and page["next"] == ids[1]
    rest = api(busy, "/api/calls", limit=10, before=page["next"])
    assert [c["id"] for c in rest["calls"]] == ids[2:] and rest["next"] is None
    assert len(api(busy, "/api/calls", agent="coder")["calls"]) == 3
    assert len(api(busy, "/api/calls", session="s1")["calls"]) == 2
    assert [c["error_code"] for c in api(busy, "/api/calls", outcome="bad_request")["calls"]] == ["invalid_json"]
    assert len(api(busy, "/api/calls", q="owls")["calls"]) == 2
    assert len(api(busy, "/api/calls", q="streamed reply")["calls"]) == 1
    assert api(busy, "/api/calls", since=time.time() + 60)["calls"] == []
    assert api(busy, "/api/calls", 400, outcome="great")["error"]["code"] == "bad_parameter"
    assert api(busy, "/api/calls", 400, limit="many")["error"]["code"] == "bad_parameter"
    assert api(busy, "/api/calls", 400, q='"open')["error"]["code"] == "bad_query"


def test_api_shows_one_call_in_full(busy: Running) -> None:
    (row,) = api(busy, "/api/calls", q="third")["calls"]
    detail = api(busy, f"/api/calls/{row['id']}")
    assert detail["stream"] is True and detail["agent"] == "coder"
    assert detail["request_body"]["encoding"] == "json"
    assert detail["request_body"]["content"]["messages"][0]["content"] == "third about owls"
    assert detail["chunks"] and all({"t_ms", "size", "text"} <= set(c) for c in detail["chunks"])
    assert detail["response_message"]["choices"][0]["message"]["content"] == "streamed reply"
    assert ["content-type", "application/json"] in detail["request_headers"]
    assert detail["attempts"][0]["status"] == 200 and detail["capture"] == "full"
    assert api(busy, "/api/calls/nope", 404)["error"]["code"] == "not_found"


def test_api_sessions_and_stats(busy: Running) -> None:
    sessions = api(busy, "/api/sessions")["sessions"]
    assert [s["session"] for s in sessions] == ["s2", "s1"]
    assert sessions[1]["agents"] == ["coder", "planner"] and sessions[1]["calls"] == 2
    assert [s["session"] for s in api(busy, "/api/sessions", agent="planner")["sessions"]] == ["s1"]
    assert [s["session"] for s in api(busy, "/api/sessions", route="openai")["sessions"]] == ["s2", "s1"]
    assert api(busy, "/api/sessions", route="nowhere")["sessions"] == []
    assert [s["session"] for s in api(busy, "/api/sessions", q="cats")["sessions"]] == ["s1"]
    assert [s["session"] for s in api(busy, "/api/sessions", outcome="ok")["sessions"]] == ["s2", "s1"]
    assert api(busy, "/api/sessions", outcome="problems")["sessions"] == []  # the bad request had no session
    assert api(busy, "/api/sessions", 400, outcome="weird")["error"]["code"] == "bad_parameter"
    assert api(busy, "/api/sessions", 400, offset=-1)["error"]["code"] == "bad_parameter"
    page = api(busy, "/api/sessions", limit=1)
    assert len(page["sessions"]) == 1 and page["next_offset"] == 1
    one = api(busy, "/api/sessions/s1")
    assert [c["agent"] for c in one["calls"]] == ["planner", "coder"]
    assert api(busy, "/api/sessions/none-such", 404)["error"]["code"] == "not_found"
    stats = api(busy, "/api/stats")
    assert stats["store"]["calls"] == 5 and stats["store"]["outcomes"] == {"ok": 4, "bad_request": 1}
    assert stats["recorder"]["written"] == 5 and stats["recorder"]["overflow"] == 0 and stats["recorder"]["queue"] == 0
    assert {a["agent"] for a in stats["agents"]} == {"planner", "coder", "default"}


def test_api_needs_the_admin_token_when_set(make_interlock: Any) -> None:
    running = make_interlock(admin={"host": "127.0.0.1", "port": _port(), "token": "t0ken"})
    assert httpx.get(running.admin_url + "/api/calls").status_code == 401
    ok = httpx.get(running.admin_url + "/api/calls", headers={"authorization": "Bearer t0ken"})
    assert ok.status_code == 200 and ok.json()["calls"] == []
    # the orchestrator's probes (the Dockerfile's HEALTHCHECK) need no token, and say no more than that
    assert httpx.get(running.admin_url + "/health").status_code == 200
    assert httpx.get(running.admin_url + "/ready").json() == {"status": "ready"}


def _port() -> int:
    from interlock.testing import free_port

    return free_port()


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "cli.db"
    with Store(path) as store:
        one = make_call(
            session="s1",
            stream=True,
            response_headers=[],
            response_body=None,
            started_at=time.time() - 7200,
            request_headers=[("content-type", "application/json")],
            request_body=b'{"messages":[{"role":"user","content":"find the lighthouse"}]}',
            chunks=[
                Chunk(5.0, b'data: {"choices":[{"delta":{"content":"north"}}]}\n\n'),
                Chunk(9.5, b"data: [DONE]\n\n"),
            ],
            duration_ms=12.0,
            input_tokens=3,
            output_tokens=1,
        )
        one.attempts = [
            Attempt("primary", "http://a/v1", None, 0.0, 3.0, 2.0, 503, None, 0.0),
            Attempt("backup", "http://b/v1", None, 250.0, 9.0, 5.0, 200, None, 240.0),
        ]
        one.decide(Decision("policy", "allow", "allow-planner", "planner may use gpt-4o"))
        one.findings = [Finding("EMAIL_ADDRESS", "request.messages[0]", 1, 5, 0.9, "redact")]
        two = Call(
            id=new_id(),
            route="anthropic",
            protocol="anthropic",
            method="POST",
            path="/v1/messages",
            agent="coder",
            outcome="denied",
            error_code="policy_denied",
            status=403,
            response_body=b'{"error":{"message":"no"}}',
        )
        store.write([one.to_record(), two.to_record()])
    return str(path)


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, ["traces", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_ls_lists_and_filters(db: str) -> None:
    out = cli("ls", "--store", db)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "TIME", "AGENT"] and len(lines) == 3
    assert "denied (policy_denied)" in lines[1] and "planner" in lines[2]
    rows = [json.loads(line) for line in cli("ls", "--store", db, "--json").splitlines()]
    assert [r["agent"] for r in rows] == ["coder", "planner"]
    assert [json.loads(x)["agent"] for x in cli("ls", "--store", db, "--json", "--agent", "planner").splitlines()] == [
        "planner"
    ]
    assert cli("ls", "--store", db, "--json", "--outcome", "denied").count("\n") == 1
    assert cli("ls", "--store", db, "--json", "--since", "1h").count("\n") == 1
    assert cli("ls", "--store", db, "--json", "--session", "s1", "--route", "openai").count("\n") == 1
    assert cli("ls", "--store", db, "--json", "-q", "lighthouse").count("\n") == 1
    assert cli("ls", "--store", db, "--json", "--limit", "1").count("\n") == 1


def test_cli_show_prints_everything_readably(db: str) -> None:
    call_id = json.loads(cli("ls", "--store", db, "--json", "--agent", "planner"))["id"]
    out = cli("show", "--store", db, call_id[:16])
    assert f"call {call_id}" in out
    assert '"content": "find the lighthouse"' in out  # the body, pretty-printed
    assert "#2 backup http://b/v1" in out and "after backoff 240ms" in out and "status 503" in out
    assert "[policy] allow rule allow-planner: planner may use gpt-4o" in out
    assert "EMAIL_ADDRESS" in out
    assert "2 chunks" in out and "+     5.0ms" in out and "+     9.5ms" in out
    assert '"content": "north"' in out  # the reassembled message
    detail = json.loads(cli("show", "--store", db, call_id, "--json"))
    assert detail["id"] == call_id and detail["chunks"][1]["t_ms"] == 9.5


def test_cli_errors_are_clear(db: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["traces", "show", "--store", db, "nope"])
    assert result.exit_code == 1 and "no call 'nope'" in result.output
    result = CliRunner().invoke(main, ["traces", "ls", "--store", str(tmp_path / "absent.db")])
    assert result.exit_code == 1 and "no such store" in result.output
    result = CliRunner().invoke(main, ["traces", "ls", "--store", db, "--since", "yesterday-ish"])
    assert result.exit_code == 2 and "15m, 2h, 3d" in result.output


def test_cli_tail_follows_new_calls(db: str) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "interlock.cli",
            "traces",
            "tail",
            "--store",
            db,
            "--json",
            "-n",
            "1",
            "--interval",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["agent"] == "coder"  # the most recent one first
        with Store(db) as store:
            late = Call(id=new_id(), route="openai", protocol="openai", method="POST", path="/x", agent="late-comer")
            store.add(late)
        assert json.loads(process.stdout.readline())["id"] == late.id
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_serve_with_an_unreadable_store_says_so(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all " * 200)
    config = tmp_path / "interlock.yaml"
    config.write_text(f"store: {{path: {junk}}}\nroutes: {{}}\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert f"Error: {junk}: file is not a database" in result.output


def test_traces_ls_names_an_mcp_call_and_sound_endings_are_not_problems(tmp_path: Path) -> None:
    # `traces ls` showed nothing that identifies an MCP call; a closed event stream and a declined
    # probe counted as the session's problems.
    def mcp_call(method: str, outcome: str, **meta: Any) -> Call:
        return Call(
            id=new_id(),
            route="tools",
            protocol="mcp",
            method="POST",
            path="/mcp",
            session="m1",
            status=400 if outcome == "unsupported" else 200,
            outcome=outcome,  # type: ignore[arg-type]
            meta={"mcp": {"kind": "request", "method": method, **meta}},
        )

    db = str(tmp_path / "m.db")
    with Store(db) as store:
        store.write(
            [
                mcp_call("server/discover", "unsupported").to_record(),
                mcp_call("tools/call", "ok", tool="lookup").to_record(),
                mcp_call("subscriptions/listen", "closed").to_record(),
            ]
        )
        [session] = store.sessions()
        assert session["calls"] == 3 and session["problems"] == 0 and session["errors"] == 0
        assert store.sessions(outcome="problems") == []
    result = CliRunner().invoke(main, ["traces", "ls", "--store", db])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "MODEL/TOOL" in lines[0]
    assert any("tools/call lookup" in line and " ok" in line for line in lines)
    assert any("server/discover" in line and "unsupported" in line for line in lines)
    as_json = [
        json.loads(line)
        for line in CliRunner().invoke(main, ["traces", "ls", "--json", "--store", db]).output.splitlines()
    ]
    assert {(r["mcp_method"], r["mcp_tool"]) for r in as_json} == {
        ("server/discover", None),
        ("tools/call", "lookup"),
        ("subscriptions/listen", None),
    }
