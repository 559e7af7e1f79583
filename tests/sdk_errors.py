"""Read interlock's error from an SDK's exception by the protocol, never by the SDK's wording.

An SDK's exception text is its own (anthropic 2.17 stopped repeating the error `code` in it); the error
object interlock sent is the protocol's: the JSON body of an error status, or the stream's error event.
"""

from __future__ import annotations

from typing import Any

import httpx


def protocol_error(exc: BaseException) -> dict[str, Any]:
    """The error object interlock sent (`{"type", "code", "message"}`): from the HTTP response when the
    status is an error, else from the stream's error event (the SDK's `body`: OpenAI's SDK keeps the
    event's `error` object, Anthropic's the whole event)."""
    response = getattr(exc, "response", None)
    if isinstance(response, httpx.Response) and response.status_code >= 400:
        body: Any = response.json()
    else:
        body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    assert isinstance(body, dict) and "code" in body, f"no protocol error object in {exc!r}"
    return body
