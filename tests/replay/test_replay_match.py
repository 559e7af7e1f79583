"""Matching: canonical bodies, volatile fields, order of identical requests, sessions, placeholders."""

from __future__ import annotations

import dataclasses
import json

from replay_helpers import chat, recorded_call

from interlock.replay.match import Matcher, MatchOptions, Request, canonical, parse_body, restore


def request(
    body: dict[str, object] | bytes,
    *,
    route: str = "openai",
    protocol: str = "openai",
    session: str | None = None,
    path: str = "/chat/completions",
    query: str = "",
) -> Request:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Request(route, protocol, "POST", path, query, raw, session)


def lookup(matcher: Matcher, incoming: Request) -> int | None:
    key, data = matcher.key_of(incoming)
    found = matcher.match(incoming, key, data)
    return None if found is None else found.recorded.step


def test_key_order_whitespace_and_volatile_fields_do_not_matter() -> None:
    matcher = Matcher(
        [recorded_call(chat("hi", user="u-1", stream_options={"include_usage": True}, metadata={"run": 1}))]
    )
    body = b'{"messages":[{"content":"hi","role":"user"}],  "model":"gpt-4o", "user":"u-2", "metadata":{"run":2}}'
    assert lookup(matcher, request(body)) == 1


def test_what_the_model_reads_does_matter() -> None:
    matcher = Matcher([recorded_call(chat("hi")), recorded_call(chat("hi", temperature=0.2))])
    assert lookup(matcher, request(chat("hi", temperature=0.7))) is None
    assert lookup(matcher, request(chat("hi", stream=True))) is None
    assert lookup(matcher, request(chat("hi"), path="/responses")) is None
    assert lookup(matcher, request(chat("hi"), route="other")) is None
    assert lookup(matcher, request(chat("hi", temperature=0.2))) == 2


def test_timestamps_in_texts_are_ignored_unless_asked() -> None:
    calls = [recorded_call(chat("Today is 2026-11-24. Now 2026-11-24T10:00:00Z."))]
    assert lookup(Matcher(calls), request(chat("Today is 2027-01-02. Now 2027-01-02T09:30:12.5+01:00."))) == 1
    strict = MatchOptions(ignore_timestamps=False)
    assert (
        lookup(Matcher(calls, strict), request(chat("Today is 2027-01-02. Now 2027-01-02T09:30:12.5+01:00."))) is None
    )


def test_more_fields_can_be_ignored() -> None:
    calls = [
        recorded_call({"model": "m", "trace": {"id": "a"}, "messages": [{"role": "user", "content": "x", "nonce": 1}]})
    ]
    incoming = request({"model": "m", "trace": {"id": "b"}, "messages": [{"role": "user", "content": "x", "nonce": 2}]})
    assert lookup(Matcher(calls), incoming) is None
    assert lookup(Matcher(calls, MatchOptions().with_ignored(["trace", "*.nonce"])), incoming) == 1


def test_the_nth_identical_request_gets_the_nth_recorded_answer() -> None:
    calls = [recorded_call(chat("poll"), {"n": i}) for i in range(3)]
    matcher = Matcher(calls)
    assert [lookup(matcher, request(chat("poll"))) for _ in range(4)] == [1, 2, 3, None]


def test_the_incoming_session_is_preferred_when_the_bundle_has_several() -> None:
    calls = [recorded_call(chat("same"), session="a"), recorded_call(chat("same"), session="b")]
    matcher = Matcher(calls)
    assert lookup(matcher, request(chat("same"), session="b")) == 2
    assert lookup(matcher, request(chat("same"), session="unknown")) == 1


def test_query_strings_match_in_any_order_and_raw_bodies_by_bytes() -> None:
    calls = [
        recorded_call(b"", route="tools", protocol="http", method="POST", path="/search", query="q=a&page=2"),
        recorded_call(b"\x00binary", route="tools", protocol="http", path="/upload"),
    ]
    matcher = Matcher(calls)
    assert lookup(matcher, Request("tools", "http", "POST", "/search", "page=2&q=a", b"")) == 1
    assert lookup(matcher, Request("tools", "http", "POST", "/upload", "", b"\x00other")) is None
    assert lookup(matcher, Request("tools", "http", "POST", "/upload", "", b"\x00binary")) == 2


def test_mcp_requests_match_without_their_jsonrpc_id_and_meta() -> None:
    recorded = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 1}, "_meta": {"progressToken": 7}},
    }
    matcher = Matcher([recorded_call(recorded, route="tools", protocol="mcp", path="/mcp")])
    incoming = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 1}, "_meta": {"progressToken": 1}},
    }
    assert lookup(matcher, request(incoming, route="tools", protocol="mcp", path="/mcp")) == 1


def test_calls_never_answered_are_not_served() -> None:
    matcher = Matcher([recorded_call(chat("x"), status=None)])
    assert lookup(matcher, request(chat("x"))) is None
    assert len(matcher.unreplayable) == 1 and matcher.recorded == []


def test_redacted_requests_match_as_templates_and_restore_the_response() -> None:
    recorded = chat("Mail <EMAIL_ADDRESS_1> and cc <EMAIL_ADDRESS_1>; call <PHONE_NUMBER_1>.")
    answer = {"choices": [{"message": {"content": "Sent to <EMAIL_ADDRESS_1> (tel <PHONE_NUMBER_1>)."}}]}
    matcher = Matcher([recorded_call(recorded, answer)])
    # The same value must stand for the same placeholder.
    assert lookup(matcher, request(chat("Mail ann@x.io and cc bob@x.io; call +1 555 0100."))) is None
    incoming = request(chat('Mail ann@x.io and cc ann@x.io; call +1 "555" 0100.'))
    key, data = matcher.key_of(incoming)
    found = matcher.match(incoming, key, data)
    assert found is not None and found.values == {"<EMAIL_ADDRESS_1>": "ann@x.io", "<PHONE_NUMBER_1>": '+1 "555" 0100'}
    restored = json.loads(restore(found.recorded.call.response_body, found.values))
    assert restored["choices"][0]["message"]["content"] == 'Sent to ann@x.io (tel +1 "555" 0100).'


def test_canonical_form_keeps_non_json_bodies_apart() -> None:
    assert canonical(parse_body(b"not json"), "openai", MatchOptions()) is parse_body(b"")


def test_uuids_and_configured_patterns_in_texts_are_ignored() -> None:
    calls = [recorded_call(chat("run 3f2a1c9e-7b1d-4c1a-9e4f-0a1b2c3d4e5f, ticket T-1001"))]
    other_run = request(chat("run 9d8e7f6a-5b4c-4d3e-8f2a-1b0c9d8e7f6a, ticket T-2002"))
    assert lookup(Matcher(calls), other_run) is None  # the ticket differs
    options = dataclasses.replace(MatchOptions(), ignore_patterns=(r"T-\d+",))
    assert lookup(Matcher(calls, options), other_run) == 1
    assert lookup(Matcher(calls, dataclasses.replace(options, ignore_uuids=False)), other_run) is None
