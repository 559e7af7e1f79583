"""Issue 17's attacks on the proxy, each reproduced: spoofed identity, web pages and DNS rebinding,
credentials at rest, dot segments, interlock's headers upstream, oversized integers."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlock.scripted import ScriptedUpstream
from interlock.testing import Running
from tests.conftest import routes_for
from tests.proxy.routing_support import collect_calls, finished, wait_for

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
KEYS = {"vk-alice": {"agent": "alice"}, "vk-bob": {"agent": "Bob", "session": "S-1"}}


def raw_request(
    running: Running, target: str, *, method: str = "POST", headers: dict[str, str] | None = None, body: bytes = b"{}"
) -> tuple[int, dict[str, Any]]:
    """Send `target` exactly as written (httpx would resolve dot segments first): (status, JSON body)."""
    head = {
        "host": f"127.0.0.1:{running.settings.listen.port}",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "connection": "close",
        **(headers or {}),
    }
    request = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", running.settings.listen.port), timeout=10) as sock:
        sock.sendall(request.encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, json.loads(payload) if payload.startswith(b"{") else {}


# -- 1. identity is a credential ----------------------------------------------------------------


def test_a_header_cannot_take_another_agents_identity(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(virtual_keys=KEYS)
    calls = collect_calls(running)
    url = running.url + "/openai/chat/completions"
    spoofed = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer vk-alice", "X-Interlock-Agent": "bob"})
    assert spoofed.status_code == 403
    assert spoofed.json()["error"]["code"] == "identity_conflict"
    # The key's own session cannot be swapped either; naming the key's own agent (any case) is fine.
    other_session = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer vk-bob", "X-Interlock-Session": "x"})
    assert other_session.status_code == 403
    same = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer vk-alice", "X-Interlock-Agent": "ALICE"})
    assert same.status_code == 200
    assert len(upstream.requests) == 1
    recorded = finished(calls, 3)
    assert [(c.agent, c.outcome) for c in recorded] == [("alice", "denied"), ("bob", "denied"), ("alice", "ok")]


def test_a_conflicting_header_can_be_ignored_instead(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(virtual_keys=KEYS, identity={"on_conflict": "ignore"})
    calls = collect_calls(running)
    response = httpx.post(
        running.url + "/openai/chat/completions",
        json=CHAT,
        headers={"x-api-key": "vk-bob", "X-Interlock-Agent": "alice", "X-Interlock-Session": "mine"},
    )
    assert response.status_code == 200
    (call,) = finished(calls)
    assert (call.agent, call.session) == ("bob", "S-1")


def test_agent_names_are_case_folded_before_rules_match(
    make_interlock: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        "version: 1\nrules:\n  - name: no-alice\n    match: {agent: 'Alice*'}\n    deny: {}\n"
    )
    running = make_interlock(policies=[str(policies)])
    url = running.url + "/openai/chat/completions"
    for name in ("Alice", "alice", "ALICE-2", "aLiCe"):
        response = httpx.post(url, json=CHAT, headers={"X-Interlock-Agent": name})
        assert response.status_code == 403, name
        assert response.json()["error"]["code"] == "policy_denied"
    assert upstream.requests == []
    assert httpx.post(url, json=CHAT, headers={"X-Interlock-Agent": "Bob"}).status_code == 200


def test_require_key_refuses_unknown_and_missing_keys_and_never_injects_the_provider_key(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    routes = routes_for(upstream)
    routes["openai"]["require_key"] = True
    routes["anthropic"]["require_key"] = True
    running = make_interlock(routes=routes, virtual_keys=KEYS)
    calls = collect_calls(running)
    url = running.url + "/openai/chat/completions"
    unknown = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer sk-guess"})
    assert unknown.status_code == 401
    assert unknown.json()["error"]["code"] == "invalid_api_key"
    missing = httpx.post(url, json=CHAT, headers={"X-Interlock-Agent": "alice"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    anthropic = httpx.post(running.url + "/anthropic/v1/messages", json={"model": "m", "max_tokens": 5, "messages": []})
    assert anthropic.status_code == 401
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["code"] == "missing_api_key"
    assert upstream.requests == []  # the route's key went nowhere
    ok = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer vk-alice"})
    assert ok.status_code == 200
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-real-openai"
    recorded = finished(calls, 4)
    assert [c.outcome for c in recorded] == ["denied", "denied", "denied", "ok"]
    assert [c.agent for c in recorded] == ["default", "default", "default", "alice"]  # a claim proves nothing


def test_require_key_without_virtual_keys_is_a_config_error(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    from pydantic import ValidationError

    routes = routes_for(upstream)
    routes["openai"]["require_key"] = True
    with pytest.raises(ValidationError, match="no virtual_keys are configured"):
        make_interlock(routes=routes)


# -- 2. no web page, no foreign Host ----------------------------------------------------------------


def test_a_cross_site_text_plain_post_is_refused(interlock: Running, upstream: ScriptedUpstream) -> None:
    # What a page on evil.example can send without a CORS preflight.
    response = httpx.post(
        interlock.url + "/openai/chat/completions",
        content=json.dumps(CHAT),
        headers={
            "content-type": "text/plain;charset=UTF-8",
            "origin": "http://evil.example",
            "sec-fetch-site": "cross-site",
            "sec-fetch-mode": "no-cors",
        },
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "origin_refused"
    # A page that sends no Origin (a no-cors GET, an old browser) is still marked by Sec-Fetch-Site.
    response = httpx.get(interlock.url + "/openai/models", headers={"sec-fetch-site": "cross-site"})
    assert response.status_code == 403
    assert upstream.requests == []


def test_a_text_plain_body_on_a_json_route_is_a_415(interlock: Running, upstream: ScriptedUpstream) -> None:
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = httpx.post(
            interlock.url + "/anthropic/v1/messages", content=json.dumps(CHAT), headers={"content-type": media}
        )
        assert response.status_code == 415, media
        assert response.json()["error"]["code"] == "unsupported_media_type"
    # Routes of protocol `http` relay any body.
    assert (
        httpx.post(interlock.url + "/tools/x", content=b"a=b", headers={"content-type": "text/plain"}).status_code
        == 200
    )
    assert len(upstream.requests) == 1


def test_a_foreign_host_is_refused(interlock: Running, upstream: ScriptedUpstream) -> None:
    # DNS rebinding: evil.example now resolves to 127.0.0.1, and the browser says so in Host.
    status, body = raw_request(
        interlock, "/openai/chat/completions", headers={"host": "evil.example:4141"}, body=json.dumps(CHAT).encode()
    )
    assert status == 403
    assert body["error"]["code"] == "host_refused"
    for host in ("localhost:1", "127.0.0.1", "[::1]:4141", "10.1.2.3"):  # names a page cannot rebind
        status, _ = raw_request(
            interlock, "/openai/chat/completions", headers={"host": host}, body=json.dumps(CHAT).encode()
        )
        assert status == 200, host
    assert len(upstream.requests) == 4


def test_allowed_hosts_and_cors_open_what_config_says(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(
        listen={
            "host": "127.0.0.1",
            "port": 0,
            "allowed_hosts": ["interlock", ".corp.example"],
            "cors": ["https://app.example"],
        }
    )
    for host in ("interlock:4141", "proxy.corp.example", "corp.example"):
        assert (
            raw_request(running, "/openai/chat/completions", headers={"host": host}, body=json.dumps(CHAT).encode())[0]
            == 200
        )
    assert raw_request(running, "/openai/chat/completions", headers={"host": "evilcorp.example"})[0] == 403
    url = running.url + "/openai/chat/completions"
    preflight = httpx.options(
        url,
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    allowed = httpx.post(url, json=CHAT, headers={"origin": "https://app.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert httpx.post(url, json=CHAT, headers={"origin": "https://other.example"}).status_code == 403


# -- 3. no credential at rest ------------------------------------------------------------------------------


def test_no_credential_bytes_in_the_db_wal_or_log(
    make_interlock: Any, upstream: ScriptedUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = make_interlock(log_level="debug")
    calls = collect_calls(running)
    secrets = {
        "query": "Qk3yQUERYSECRET0001",
        "token": "Tok3nQUERYSECRET0002",
        "apim": "ApimHEADERSECRET0003",
        "auth": "AuthTokHEADERSECRET0004",
        "agent": "AgentBEARERSECRET0005",
    }
    response = httpx.post(
        running.url + f"/openai/chat/completions?api-version=1&key={secrets['query']}&access_token={secrets['token']}",
        json=CHAT,
        headers={
            "Ocp-Apim-Subscription-Key": secrets["apim"],
            "X-Auth-Token": secrets["auth"],
            "Authorization": f"Bearer {secrets['agent']}",
        },
    )
    assert response.status_code == 200
    received = upstream.requests[-1]  # the upstream still gets what the agent sent
    assert secrets["query"] in received.query and received.headers["x-auth-token"] == secrets["auth"]
    (call,) = finished(calls)
    assert call.query == "api-version=1&key=***&access_token=***"

    def stored() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.glob("interlock.db*"))

    wait_for(lambda: b"api-version=1&key=***" in stored())
    # interlock's log, not the test's own HTTP client's (which logs the URL it was given).
    logged = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    data = stored() + "\n".join(logged).encode()
    for value in secrets.values():
        assert value.encode() not in data, value
    assert b"ocp-apim-subscription-key" not in data.lower()


# -- 4. paths cannot escape ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/openai/../../etc/passwd",
        "/openai/chat/../admin",
        "/openai/%2e%2e/%2E%2E/etc/passwd",
        "/openai/chat/..%2fadmin",
        "/openai/chat/%252e%252e/admin",
        "/openai/chat/..\\admin",
        "/openai/./chat/completions",
        "/openai/chat/..;/admin",
    ],
)
def test_dot_segments_are_refused_before_policy(interlock: Running, upstream: ScriptedUpstream, target: str) -> None:
    status, body = raw_request(interlock, target, body=json.dumps(CHAT).encode())
    assert status == 400
    assert body["error"]["code"] == "invalid_path"
    assert upstream.requests == []


def test_the_path_sent_is_the_path_policies_saw(interlock: Running, upstream: ScriptedUpstream) -> None:
    calls = collect_calls(interlock)
    # The HTTP client (aiohttp's yarl) decodes escaped unreserved characters: `/%61dmin` is sent as
    # `/admin`, so that is what policies must see too.
    for target in ("/tools/v1/a.b/c%20d/x..y/.hidden", "/tools/v1//double", "/tools/%7Euser/%61dmin%2fx/%c3%a9"):
        status, _ = raw_request(interlock, target, method="GET", body=b"")
        assert status == 200, target
    recorded = finished(calls, 3)
    sent = [r.raw_path for r in upstream.requests]
    assert (
        sent
        == ["/tools" + c.path for c in recorded]
        == [
            "/tools/v1/a.b/c%20d/x..y/.hidden",
            "/tools/v1//double",
            "/tools/~user/admin%2Fx/%C3%A9",
        ]
    )


# -- 5 and 12 ---------------------------------------------------------------------------------------------


def test_no_x_interlock_header_reaches_the_upstream(interlock: Running, upstream: ScriptedUpstream) -> None:
    httpx.post(
        interlock.url + "/openai/chat/completions",
        json=CHAT,
        headers={"X-Interlock-Debug": "1", "X-Interlock-Workflow": "w", "X-Interlock-Anything": "x"},
    )
    assert not [name for name in upstream.requests[-1].headers if name.lower().startswith("x-interlock-")]


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_an_integer_past_the_parsers_limit_is_invalid_json(
    interlock: Running, upstream: ScriptedUpstream, route: str
) -> None:
    calls = collect_calls(interlock)
    body = b'{"model": "m", "max_tokens": ' + b"9" * 5000 + b', "messages": []}'
    path = "/chat/completions" if route == "openai" else "/v1/messages"
    response = httpx.post(interlock.url + f"/{route}{path}", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert upstream.requests == []
    # Recorded, and readable through the admin API (its body view parses JSON too).
    (call,) = finished(calls)
    wait_for(lambda: httpx.get(interlock.admin_url + f"/api/calls/{call.id}").status_code == 200)
    assert httpx.get(interlock.admin_url + f"/api/calls/{call.id}").json()["outcome"] == "bad_request"


# -- secure by default ---------------------------------------------------------------------------------------


def test_the_embedded_default_keeps_credentials_from_the_provider(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    import yaml

    from interlock.config import DEFAULT_CONFIG

    defaults = yaml.safe_load(DEFAULT_CONFIG)
    running = make_interlock(guardrails=defaults["guardrails"])  # the embedded default's, on the scripted routes
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5" + "0smkjE"  # a GitHub token, its CRC included
    response = httpx.post(
        running.url + "/openai/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": f"push with {token} now"}]},
    )
    assert response.status_code == 200
    sent = upstream.requests[-1].body.decode()
    assert token not in sent and "<SECRET_1>" in sent
    assert token in response.json()["choices"][0]["message"]["content"]  # restored for the agent


def test_the_secrets_scanner_masks_what_no_list_names(
    make_interlock: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    running = make_interlock(guardrails={"request": {"SECRET": "redact"}, "entities": []})
    calls = collect_calls(running)
    token = "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"
    response = httpx.post(
        running.url + f"/tools/lookup?q={token}", content=b"{}", headers={"X-Custom": f"token={token}"}
    )
    assert response.status_code == 200
    assert upstream.requests[-1].headers["x-custom"] == f"token={token}"  # sent as the agent sent it
    (call,) = finished(calls)
    assert call.query == "q=***" and ("x-custom", "token=***") in call.request_headers
    wait_for(lambda: b"q=***" in b"".join(p.read_bytes() for p in tmp_path.glob("interlock.db*")))
    assert token.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("interlock.db*"))


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Ocp-Apim-Subscription-Key", True),
        ("X-Auth-Token", True),
        ("x-amz-security-token", True),
        ("X-CSRFToken", True),
        ("x-client-secret", True),
        ("set-cookie", True),
        ("proxy-authorization", True),
        ("x-ratelimit-remaining-tokens", False),  # the providers' rate-limit headers stay on record
        ("anthropic-ratelimit-input-tokens-remaining", False),
        ("idempotency-key", False),
        ("mcp-session-id", False),
        ("x-interlock-session", False),
    ],
)
def test_the_header_deny_list_goes_by_the_words_in_a_name(name: str, secret: bool) -> None:
    from interlock.core.call import is_secret_header, public_headers

    assert is_secret_header(name) is secret
    assert public_headers([(name, "v")]) == ([] if secret else [(name, "v")])
