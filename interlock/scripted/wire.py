"""What every wire format of the scripted provider shares: the registry of formats, the request as
the format's `answer` gets it, and the plumbing of an answer (a JSON reply, a scripted stream with its
faults: a reset, a stall, a provider's error event).

A provider's format is a module of this package that registers itself when imported (the package
imports each of its modules): `register(ScriptedFormat("bedrock", matches, answer))`. The first
format whose `matches(path)` holds answers the request; the OpenAI and Anthropic formats (the
default, in `upstream.py`) answer the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interlock.scripted.replies import Script

if TYPE_CHECKING:
    from interlock.scripted.upstream import ScriptedUpstream


@dataclass
class Received:
    """One request the scripted provider received (`ScriptedUpstream.requests`)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float
    #: The path as sent, still percent-encoded (`path` is decoded).
    raw_path: str = ""
    #: Bedrock: why its SigV4 signature did not verify (None: it did, or it was not checked).
    signature_problem: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


class Reset(Exception):
    """Raised by an answer to drop the connection (uvicorn closes it without a response)."""


@dataclass
class Exchange:
    """One request as a format answers it: what was received, its JSON body (`{}` when not an
    object), and the ASGI `receive` and `send`; `upstream` picks the script and watches for the
    client leaving."""

    upstream: ScriptedUpstream
    received: Received
    data: dict[str, Any]
    receive: Any
    send: Any


@dataclass(frozen=True)
class ScriptedFormat:
    """A provider's wire format in the scripted provider: which requests are its, and its answer."""

    name: str
    matches: Callable[[str], bool]
    answer: Callable[[Exchange], Awaitable[None]]


@dataclass(frozen=True)
class OpenAIDialect:
    """How an OpenAI-compatible provider's answers differ from OpenAI's (`upstream.answer_openai`):
    its error body for a script (None: OpenAI's), and its chat completion (stream events, whole)."""

    error: Callable[[Script], bytes | None]
    chat: Callable[[list[bytes], dict[str, Any]], tuple[list[bytes], dict[str, Any]]]


#: The registered formats, in registration order (the package imports its modules alphabetically).
FORMATS: list[ScriptedFormat] = []


def register(scripted_format: ScriptedFormat) -> ScriptedFormat:
    """Add a format (once per name: a module imported again does not add it twice)."""
    if all(known.name != scripted_format.name for known in FORMATS):
        FORMATS.append(scripted_format)
    return scripted_format


def format_for(path: str) -> ScriptedFormat | None:
    """The registered format that answers a request to `path` (None: the OpenAI/Anthropic default)."""
    return next((known for known in FORMATS if known.matches(path)), None)


def extra_headers(script: Script) -> list[tuple[bytes, bytes]]:
    """The script's own response headers, `Retry-After` included."""
    extra = [(k.lower().encode(), v.encode()) for k, v in script.headers.items()]
    if script.retry_after is not None:
        extra.append((b"retry-after", script.retry_after.encode()))
    return extra


async def opening(script: Script, streamed: bool) -> Script:
    """The script's start as the native formats share it: its `delay` waited, a `reset_after` of 0
    raised before any response (a stream's reset is `send_stream`'s, once its head is sent), and a
    named `error` with no error status given 400."""
    if script.delay:
        await asyncio.sleep(script.delay)
    if script.reset_after == 0 and script.status == 200 and not streamed:
        raise Reset("scripted reset before the response")
    if script.error is not None and script.status < 400:
        script = dataclasses.replace(script, status=400)
    return script


async def send_json(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_stream(
    send: Any, script: Script, chunks: Iterable[bytes], gone: asyncio.Event, error_event: Callable[[], bytes]
) -> None:
    """The body of a stream whose head was sent, chunk by chunk, with the script's faults: a reset
    (`reset_after`), a stall until the client leaves (`stall_after`, bounded by `stall_seconds`), the
    provider's error event instead of the rest (`error_event_after`), `chunk_delay` between chunks."""
    for i, chunk in enumerate(chunks):
        if script.reset_after is not None and i >= script.reset_after:
            raise Reset("scripted reset mid-stream")
        if script.stall_after is not None and i >= script.stall_after:
            # Silent, connection open, until the client leaves (or the bound passes).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), script.stall_seconds)
            raise Reset("scripted stall ended")
        if script.error_event_after is not None and i >= script.error_event_after:
            await send({"type": "http.response.body", "body": error_event(), "more_body": True})
            break
        if i and script.chunk_delay:
            await asyncio.sleep(script.chunk_delay)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    if script.end_delay:
        await asyncio.sleep(script.end_delay)
    await send({"type": "http.response.body", "body": b""})
