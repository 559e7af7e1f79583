"""The last line before the record: secrets in header values, the path and the query string.

Header names that carry credentials are never stored (`core.call.is_secret_header`) and
credential query parameters are masked at the edge (`secret_query_params`); this stage catches what
those lists cannot name: a token in `X-Custom: ghp_...`, a key in `?q=sk-...`, a key in a path.
It runs the guardrails' secrets scanner (kingfisher) over the values that could hold one, and
replaces what it finds with `***` in what is recorded and exported (the upstream got the call as
the agent sent it already).

Scanning every call's headers measured ≈ 130 µs of CPU per call (16 SDK headers, ≈ 500 bytes,
2-core machine under load): too much for the plain path. A secret is a long unbroken token, so
only values holding a run of 20 or more token characters are scanned; an SDK's ordinary headers,
paths and URLs hold none, and the check costs a few µs (docs/security.md).
"""

from __future__ import annotations

import re
from typing import Any

from interlock.core.call import Call, Headers, is_secret_header

#: A run that could be (part of) a key or a token: 20+ letters, digits, `_`, `+` or `=`. Dashes,
#: dots and slashes end a run, so URLs, paths, UUIDs and versions are not scanned; keys hold longer
#: runs than that between their dashes (`sk-proj-…`, `ghp_…`, `xoxb-…-…`, JWT parts).
_CANDIDATE = re.compile(r"[A-Za-z0-9_+=]{20,}")
#: Values that hold long tokens by design and never a credential.
_SKIP = frozenset({"traceparent", "tracestate", "content-type", "accept", "user-agent", "mcp-session-id"})


class ScrubRecord:
    """A `seal` hook (the recorder reads the call after it): masks what the secrets scanner finds in
    header values, the path, the query and the attempts' URLs. Needs the guardrails stage, whose engine it borrows."""

    name = "scrub"

    def __init__(self, guardrails: Any) -> None:
        self.guardrails = guardrails  # guardrails.stage.Guardrails

    def seal(self, call: Call) -> None:
        detector = self.guardrails.detector_now()
        scanner = getattr(detector, "secrets", None)
        if scanner is None:
            return  # no engine built (yet), or secrets off: the name and parameter lists still hold
        call.request_headers = _scrub_headers(scanner, call.request_headers)
        call.response_headers = _scrub_headers(scanner, call.response_headers)
        if _CANDIDATE.search(call.path):
            call.path = _masked(scanner, call.path)
        if call.query and _CANDIDATE.search(call.query):
            call.query = _masked(scanner, call.query)
        for attempt in call.attempts:  # the URL of each try holds the path and query again
            if _CANDIDATE.search(attempt.url):
                attempt.url = _masked(scanner, attempt.url)


def _scrub_headers(scanner: Any, headers: Headers) -> Headers:
    if _CANDIDATE.search("\n".join([value for name, value in headers if name not in _SKIP])) is None:
        return headers  # the usual call: one search over all the values
    out: Headers | None = None
    for i, (name, value) in enumerate(headers):
        if name in _SKIP or is_secret_header(name) or _CANDIDATE.search(value) is None:
            continue
        masked = _masked(scanner, value)
        if masked != value:
            if out is None:
                out = list(headers)
            out[i] = (name, masked)
    return headers if out is None else out


def _masked(scanner: Any, text: str) -> str:
    found = scanner.scan(text)
    for detection in sorted(found, key=lambda d: d.start, reverse=True):
        text = text[: detection.start] + "***" + text[detection.end :]
    return text


__all__ = ["ScrubRecord"]
