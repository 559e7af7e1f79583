"""The admin port against DNS rebinding and other sites' pages (issue 17, item 2)."""

from __future__ import annotations

import socket
from typing import Any

import httpx

from interlock.testing import Running


def status_with_host(running: Running, path: str, host: str, token: str | None = None) -> int:
    """GET `path` on the admin port with this exact Host header (httpx would set its own)."""
    auth = f"authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", running.settings.admin.port), timeout=10) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_without_a_token_only_loopback_hosts_reach_the_store(interlock: Running) -> None:
    # DNS rebinding: a page on evil.example, now resolving to 127.0.0.1, reads the recorded calls.
    assert status_with_host(interlock, "/api/calls", "evil.example:4142") == 403
    assert status_with_host(interlock, "/api/calls", "10.0.0.5:4142") == 403  # not loopback, no token
    for host in ("localhost:4142", "127.0.0.1", "[::1]:4142"):
        assert status_with_host(interlock, "/api/calls", host) == 200, host
    # Orchestrators probe by address: the probes answer any Host.
    assert status_with_host(interlock, "/health", "10.0.0.5:4142") == 200
    assert status_with_host(interlock, "/ready", "evil.example") == 200


def test_with_a_token_addresses_are_answered_and_names_must_be_listed(make_interlock: Any) -> None:
    running = make_interlock(admin={"host": "127.0.0.1", "port": 0, "token": "t0k", "allowed_hosts": ["ops.example"]})
    assert status_with_host(running, "/api/calls", "10.0.0.5:4142", "t0k") == 200
    assert status_with_host(running, "/api/calls", "ops.example:4142", "t0k") == 200
    assert status_with_host(running, "/api/calls", "evil.example:4142", "t0k") == 403
    assert status_with_host(running, "/api/calls", "10.0.0.5:4142") == 401  # the token still applies


def test_other_sites_pages_are_refused(interlock: Running) -> None:
    url = interlock.admin_url + "/api/calls"
    own = interlock.admin_url
    # A cross-site text/plain POST (no preflight) and a no-cors read are refused.
    post = httpx.post(url, content=b"x", headers={"content-type": "text/plain", "origin": "http://evil.example"})
    assert post.status_code == 403
    assert post.json()["error"]["code"] == "origin_refused"
    no_cors = httpx.get(url, headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"})
    assert no_cors.status_code == 403
    assert httpx.get(url, headers={"origin": "null"}).status_code == 403
    # The UI's own fetches (same origin, Origin sent on POST) and a followed link still work.
    same = httpx.get(url, headers={"origin": own, "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"})
    assert same.status_code == 200
    link = httpx.get(interlock.admin_url + "/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})
    assert link.status_code == 200
    own_post = httpx.post(url, json={}, headers={"origin": own})
    assert own_post.status_code != 403
