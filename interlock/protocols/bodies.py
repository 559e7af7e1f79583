"""JSON bodies: a request's read as the route expects it (a 400 in the protocol's shape otherwise),
a recorded response's read back, and the JSON interlock writes itself."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from interlock.core.call import Call
from interlock.core.views import JsonPath, TextSlot
from interlock.protocols.encoding import Unreadable, decode_body
from interlock.protocols.errors import BadRequest

#: The most a recorded body is decoded to for reading (a UI page, a search index, replay).
READ_LIMIT = 256 * 1024 * 1024


def json_object_body(call: Call) -> dict[str, Any]:
    """The request body as a JSON object, kept on the call (`request_json`); anything else is a 400
    `invalid_json` in the protocol's shape."""
    data = parse_json_body(call)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object", "invalid_json")
    call.request_json = data
    return data


def body_model(data: dict[str, Any]) -> str | None:
    """The body's `model` (None when absent); not a string: a 400 `invalid_request`."""
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("`model` must be a string", "invalid_request")
    return model


def parse_json_body(call: Call) -> Any:
    if not call.request_body:
        raise BadRequest("the request body is empty; this route expects JSON", "invalid_json")
    try:
        return json.loads(call.request_body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", "invalid_json") from None
    except ValueError:  # an integer past Python's int-string limit (4,300 digits)
        raise BadRequest("the request body holds a number too long to read", "invalid_json") from None
    except RecursionError:
        raise BadRequest("the request body's JSON is nested too deeply", "invalid_json") from None


def json_strings(value: Any, path: JsonPath, role: str) -> list[TextSlot]:
    """The string leaves of a JSON value as text slots, in document order (iterative: an agent's
    JSON may nest deeper than Python's recursion limit)."""
    slots: list[TextSlot] = []
    stack: list[tuple[Any, JsonPath]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            slots.append(TextSlot(where, item, role))
        elif isinstance(item, dict):
            stack += [(v, (*where, k)) for k, v in reversed(item.items())]
        elif isinstance(item, list):
            stack += [(v, (*where, i)) for i, v in reversed(list(enumerate(item)))]
    return slots


def dump_body(data: Any, separators: tuple[str, str] | None = (",", ":")) -> bytes:
    """JSON that interlock writes (a re-serialised body, a rewritten event, its own reply): UTF-8,
    compact unless `separators` says otherwise. JSON text may carry a lone surrogate (`"\\ud800"`),
    which has no UTF-8 form; such a value is written with ASCII escapes instead, so it stays valid
    JSON and reaches the other side as it was sent."""
    text = json.dumps(data, ensure_ascii=False, separators=separators)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(data, separators=separators).encode()


def decoded_body(body: bytes | None, headers: Iterable[Sequence[str]]) -> bytes:
    """A recorded body with its content-encoding undone, for reading (b"" when it does not decode).
    The proxy records bodies decoded already (`encoding.py`); this reads older records and replies."""
    if not body:
        return b""
    try:
        return decode_body(body, headers, READ_LIMIT)
    except Unreadable:
        return b""


def response_json(call: Call) -> Any:
    """The (non-streamed) upstream response body parsed as JSON, or None."""
    body = decoded_body(call.response_body, call.response_headers)
    if not body:
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):  # ValueError: JSON's errors, and a number too long to read
        return None
