"""Error shaping shared by the adapters: a request refused at the edge (`BadRequest`, answered by the
adapter's `error_reply` in its protocol's shape) and the headers every interlock error reply carries."""

from __future__ import annotations

from interlock.core.call import Headers


class BadRequest(Exception):
    """The agent sent something the route cannot accept; answered with a 4xx in the protocol's shape."""

    def __init__(self, message: str, code: str = "bad_request", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def json_headers(retryable: bool) -> Headers:
    """The headers of an error reply interlock writes as JSON (`Adapter.error_reply`)."""
    headers: Headers = [("content-type", "application/json")]
    if not retryable:
        # The OpenAI and Anthropic SDKs honour this: interlock already retried, so they should not.
        headers.append(("x-should-retry", "false"))
    return headers
