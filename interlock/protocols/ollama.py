"""Ollama's native API (`/api/chat`, `/api/generate`, `/api/embed`), as the `ollama` SDKs call it.

`POST /api/chat` (messages, tools, `options`), `/api/generate` (a prompt, with `system`, `suffix`,
`template`), `/api/embed` (and the older `/api/embeddings`). Both generating endpoints stream unless
the body says `"stream": false`: NDJSON (`ollama_stream.py`), one chunk a line, the last with
`"done": true`, `done_reason` and the counts. The model is the body's `model`, so aliases and
fallbacks rewrite the body. Errors are `{"error": "<message>"}` with an HTTP status, and a line of
that shape ends a failing stream. Everything else under `/api/` (`tags`, `show`, `ps`, `pull`, ...)
manages models: relayed as plain HTTP (a `pull`'s NDJSON progress as it comes, with no total
timeout). Formats from the API reference (ollama/ollama `docs/api.md`), the server's handlers
(`server/routes.go`: content types, the stream and error writers) and the ollama-python client
(`ollama/_client.py`, `_types.py`), which the tests drive.

Tools are OpenAI chat's (`{"type": "function", "function": {...}}`), read by the same helpers; a
model's tool call carries its arguments as a JSON object (not a string), whole in one chunk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from interlock.core.call import Call, Reply
from interlock.core.views import Event, JsonPath, RequestView, ResponseView, TextSlot, TokenUsage, ToolCall
from interlock.protocols.base import (
    Adapter,
    BadRequest,
    ResponseSummary,
    StreamText,
    Unmetered,
    _json_headers,
    body_model,
    dump_body,
    json_object_body,
    json_strings,
    token_count,
)
from interlock.protocols.conversation import ChatMessage, ChatToolCall, exchange
from interlock.protocols.ollama_stream import (
    MAX_LINE_BYTES,
    NdjsonSplitter,
    head_and_tail,
    iter_ndjson_events,
    reassemble,
)
from interlock.protocols.openai import OpenAIAdapter
from interlock.protocols.openai_request import checked_tools, tool_names
from interlock.protocols.openai_request import sample_body as chat_sample_body
from interlock.protocols.sse import EventSplitter

#: The model endpoints, by path, and the operation each is (OTel's `gen_ai.operation.name`).
_OPERATIONS = {
    "/api/chat": "chat",
    "/api/generate": "text_completion",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
}
#: `options` fields as the request parameters policies and OTel name.
_PARAMS = {
    "num_predict": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
#: A policy's parameter → its `options` field.
_NATIVE = {
    "max_tokens": "num_predict",
    "max_completion_tokens": "num_predict",
    "max_output_tokens": "num_predict",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
}
#: `/api/generate`'s texts the model reads, and as whose.
_GENERATE_TEXTS = (("system", "system"), ("template", "system"), ("prompt", "user"), ("suffix", "user"))
#: OpenAI chat's tools are Ollama's: its adapter strips a denied one.
_OPENAI = OpenAIAdapter()


class OllamaAdapter(Adapter):
    name = "ollama"
    title = "Ollama"
    #: The ollama SDKs read the server's address from here (`ollama.Client()` without a host).
    base_url_env = "OLLAMA_HOST"
    json_body = True
    opaque = False
    model_api = True
    provider_name = "ollama"
    #: A local server needs no key; Ollama's cloud (`https://ollama.com`) takes `Authorization: Bearer`.
    default_upstream = "http://127.0.0.1:11434"
    default_path = "/api/chat"
    stream_media_types = ("application/x-ndjson",)
    #: The last line of a generation says `"done": true` at its top level: read from the stream's last
    #: line parsed (`last_line_ends_stream`), since a tool call's arguments may hold `{"done": true}`
    #: too, and a stream cut right after such a line must not count as whole. The markers only say
    #: that the stream has a terminator.
    stream_end_markers = (b'"done":true', b'"done": true')
    markers_at_line_start = False
    ends_by_last_line = True
    #: The longest live NDJSON line (`ollama_stream.MAX_LINE_BYTES`).
    max_line_bytes = MAX_LINE_BYTES

    def last_line_ends_stream(self, line: bytes) -> bool:
        try:
            data = json.loads(line)
        except ValueError:
            return False
        return isinstance(data, dict) and data.get("done") is True

    def parse(self, call: Call) -> RequestView:
        path = call.path
        if path.startswith("/v1/"):
            # Ollama's OpenAI-compatible API speaks OpenAI's format, which this adapter does not read:
            # relayed here it would pass every rule and guardrail unread. An `openai` route reads it.
            raise BadRequest(
                f"{path!r} is Ollama's OpenAI-compatible API: call it through an `openai` route whose"
                " upstream is the Ollama server's /v1 (this route speaks Ollama's native /api/...)",
                "not_found",
                404,
            )
        operation = _OPERATIONS.get(path)
        if call.method != "POST" or operation is None:
            return RequestView(operation="http")  # tags, show, ps, pull, ...: model management
        data = json_object_body(call)
        view = RequestView(operation=operation, model=body_model(data))
        if operation != "embeddings":
            view.stream = data.get("stream") is not False  # streamed unless the body says not
        options = data.get("options")
        if options is not None and not isinstance(options, dict):
            raise BadRequest("`options` must be an object", "invalid_request")
        view.params = {_PARAMS[k]: v for k, v in (options or {}).items() if k in _PARAMS}
        if _unlimited(view.params.get("max_tokens")):
            # `num_predict` -1 (or -2, "fill the context") sets no bound: read as no `max_tokens` at
            # all, so a rule comparing `request.params.max_tokens` fails closed (an error for the
            # rule, its `on_error`) instead of passing -1 as a small bound; `set_param` bounds it.
            del view.params["max_tokens"]
        if path == "/api/chat":
            view.texts = _message_texts(data.get("messages"))
            for i, message in enumerate(data.get("messages") or []):
                _unread(view, message, f"messages[{i}].", ("images",))
            view.tools = tool_names(checked_tools(data.get("tools")))
        elif path == "/api/generate":
            for key, role in _GENERATE_TEXTS:
                value = data.get(key)
                if value is not None and not isinstance(value, str):
                    raise BadRequest(f"`{key}` must be a string", "invalid_request")
                if value:
                    view.texts.append(TextSlot((key,), value, role))
            _unread(view, data, "", ("images", "context"))
        else:
            view.texts = _embed_texts(data)
        return view

    # -- routing --------------------------------------------------------------------------------

    def upstream_problem(self, url: str) -> str | None:
        # Agents' paths carry /api/... (the SDKs add it to the host), so an upstream ending in it
        # would send /api/api/chat.
        if url.rstrip("/").endswith(("/api", "/v1")):
            return "the upstream is the Ollama server's address (http://host:11434), without /api or /v1"
        return None

    def open_ended(self, call: Call) -> bool:
        # A `pull`, `push` or `create` streams progress for as long as the download takes: no total
        # timeout (idle gaps still time out), and no `done` line to end it.
        view = call.view
        return isinstance(view, RequestView) and view.operation == "http"

    # -- streams ----------------------------------------------------------------------------------

    def event_splitter(self) -> EventSplitter:
        return NdjsonSplitter(self.max_line_bytes)  # type: ignore[return-value]  # the same feed/pending/close

    def iter_events(self, body: bytes) -> Iterator[Event]:
        return iter_ndjson_events(body)

    def stream_event(self, event: str | None, data: Any) -> bytes:
        return dump_body(data) + b"\n"

    def stream_error_event(self, code: str, message: str) -> bytes:
        # How the server ends a failing stream: a line with the error, then nothing.
        return json.dumps(_error(code, message)).encode() + b"\n"

    def stream_head_and_tail(self, body: bytes, head: int, tail: int) -> bytes:
        return head_and_tail(body, head, tail)

    def reassemble(self, events: list[dict[str, Any]]) -> Any:
        return reassemble(events)

    def fold_usage(self, event: Event, found: Any) -> Any:
        # The counts come on the last line (`done: true`); earlier chunks carry none.
        if "eval_count" not in event.data:
            return found
        data = event.json()
        return data if isinstance(data, dict) else found

    # -- reading a response -----------------------------------------------------------------------

    def usage(self, call: Call) -> tuple[int | None, int | None]:
        counts = self.memoized(call, "usage", _counts)
        if counts is None:
            return None, None
        return token_count(counts.get("prompt_eval_count")), token_count(counts.get("eval_count"))

    def token_usage(self, call: Call) -> TokenUsage | None:
        counts = self.memoized(call, "usage", _counts)
        if counts is None:
            return None
        # `prompt_eval_count` is the prompt tokens the model evaluated: a prompt Ollama found in its
        # cache is not counted again (reported as it is; a local model has no cache price).
        return TokenUsage(
            input=token_count(counts.get("prompt_eval_count")), output=token_count(counts.get("eval_count"))
        )

    def unmetered(self, call: Call) -> Unmetered | None:
        view = call.view
        if not isinstance(view, RequestView) or call.method != "POST":
            return None
        if call.path == "/api/embeddings":
            return Unmetered(False, "Ollama's older /api/embeddings answers with the vector only, no token usage")
        data = call.request_json if isinstance(call.request_json, dict) else {}
        if (view.operation == "chat" and not data.get("messages")) or (
            view.operation == "text_completion" and not data.get("prompt")
        ):
            # The server loads (or with `keep_alive: 0` unloads) the model and answers
            # `done_reason: load`: nothing is generated, no token is counted.
            return Unmetered(True, "an Ollama request without messages or a prompt only loads or unloads the model")
        return None

    def response_texts(self, data: Any) -> list[TextSlot]:
        if not isinstance(data, dict):
            return []
        message = data.get("message")
        if isinstance(message, dict):
            return _assistant_texts(message, ("message",))
        return [TextSlot((key,), data[key], "assistant") for key in ("thinking", "response") if _text(data.get(key))]

    def response_tool_calls(self, data: Any) -> list[ToolCall]:
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            return []
        return [
            ToolCall(str(function.get("name")), json.dumps(function.get("arguments", {})), call.get("id"))
            for _, call, function in _tool_calls(message)
        ]

    def read_summary(self, data: Any, summary: ResponseSummary) -> None:
        if not isinstance(data, dict):
            return
        summary.take(None, data.get("model"))  # Ollama's answers carry no id
        if isinstance(data.get("done_reason"), str):
            summary.finish_reasons = [data["done_reason"]]

    def conversation(self, request: Any, response: Any) -> list[ChatMessage]:
        messages: list[ChatMessage] = []
        if isinstance(request, dict):
            for i, message in enumerate(request.get("messages") or []):
                if isinstance(message, dict):
                    messages.append(_chat_message(message, str(message.get("role", "user")), f"request.messages[{i}]"))
            for key, role in _GENERATE_TEXTS:
                if key != "template" and _text(request.get(key)):
                    messages.append(ChatMessage(role, request[key], f"request.{key}"))
        answer: list[ChatMessage] = []
        if isinstance(response, dict):
            if isinstance(response.get("message"), dict):
                answer.append(_chat_message(response["message"], "assistant", "response.message"))
            elif _text(response.get("response")):
                answer.append(ChatMessage("assistant", response["response"], "response.response"))
        return exchange(messages, answer)

    def error_reply(self, status: int, code: str, message: str, *, retryable: bool = True) -> Reply:
        return Reply(status, json.dumps(_error(code, message)).encode(), _json_headers(retryable))

    # -- policy test cases ------------------------------------------------------------------------

    def sample_body(
        self, path: str, text: str, model: str | None, tools: Sequence[str], tool: tuple[str, Any] | None = None
    ) -> dict[str, Any] | None:
        if path not in ("/api/generate", "/api/embed", "/api/embeddings"):
            return chat_sample_body(path, text, model, tools)  # /api/chat: OpenAI chat's messages and tools
        body: dict[str, Any] = {"model": model} if model is not None else {}
        body["input" if path == "/api/embed" else "prompt"] = text
        return body

    # -- policy -----------------------------------------------------------------------------------

    def strip_tools(self, data: Any, names: set[str]) -> list[str]:
        return _OPENAI.strip_tools(data, names)

    def set_param(self, data: Any, name: str, value: Any, operation: str) -> list[tuple[str, Any, Any]]:
        native = _NATIVE.get(name)
        if not isinstance(data, dict) or native is None:
            return []
        options = data.get("options")
        if not isinstance(options, dict):
            options = data["options"] = {}
        old = options.get(native)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        old_number = isinstance(old, (int, float)) and not isinstance(old, bool)
        # `num_predict` -1 (or -2, "fill the context") means no limit: a bound replaces it.
        unbounded = native == "num_predict" and _unlimited(old)
        if number and old_number and not unbounded and old <= value:
            return []
        if not number and native in options and old == value:
            return []
        options[native] = value
        return [(_PARAMS[native], old, value)]

    def stream_tool_names(self, event: Any) -> list[str]:
        if "tool_calls" not in event.data:
            return []
        data = event.json()
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            return []
        return [str(function.get("name")) for _, _, function in _tool_calls(message)]

    # -- guardrails -------------------------------------------------------------------------------

    def stream_texts(self, event: str | None, data: Any) -> list[StreamText]:
        if not isinstance(data, dict):
            return []
        texts: list[StreamText] = []
        message = data.get("message")
        if isinstance(message, dict):
            for key in ("thinking", "content"):
                if _text(message.get(key)):
                    texts.append(StreamText(f"message.{key}", ("message", key), message[key]))
            for j, _, function in _tool_calls(message):  # a tool call comes whole in one chunk
                where: JsonPath = ("message", "tool_calls", j, "function", "arguments")
                for slot in json_strings(function.get("arguments"), where, "tool_args"):
                    key = ".".join(map(str, slot.path))
                    texts.append(StreamText(key, slot.path, slot.text, delta=False))
            return texts
        for key in ("thinking", "response"):  # /api/generate
            if _text(data.get(key)):
                texts.append(StreamText(key, (key,), data[key]))
        return texts

    def stream_keepalive(self, event: str | None, data: Any) -> bool:
        # A chunk with nothing in it (an empty piece while the model works) ends no text; the last
        # line (`done: true`) and an error line end every text, held text going out before them.
        return isinstance(data, dict) and data.get("done") is False and "error" not in data


def _unlimited(num_predict: Any) -> bool:
    """A negative `num_predict`: no bound on the answer's length (-1 none, -2 until the context is full)."""
    return isinstance(num_predict, (int, float)) and not isinstance(num_predict, bool) and num_predict < 0


def _text(value: Any) -> bool:
    """A non-empty string (an empty piece of a stream is nothing to read or hold)."""
    return isinstance(value, str) and value != ""


def _tool_calls(message: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(position, tool call, its function) of each tool call in a message."""
    calls = message.get("tool_calls")
    for j, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            yield j, call, function


def _assistant_texts(message: dict[str, Any], path: JsonPath) -> list[TextSlot]:
    slots = [
        TextSlot((*path, key), message[key], "assistant") for key in ("thinking", "content") if _text(message.get(key))
    ]
    for j, _, function in _tool_calls(message):
        slots += json_strings(function.get("arguments"), (*path, "tool_calls", j, "function", "arguments"), "tool_args")
    return slots


def _message_texts(messages: Any) -> list[TextSlot]:
    """The texts of `/api/chat`'s messages: contents, thinking, and tool calls' arguments (a JSON object
    whose every string is a text); a malformed message is a 400."""
    if messages is None:
        return []  # no messages: Ollama loads the model and answers `done_reason: load`
    if not isinstance(messages, list):
        raise BadRequest("`messages` must be a list", "invalid_request")
    slots: list[TextSlot] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] must be an object", "invalid_request")
        role = str(message.get("role", "user"))
        for key in ("content", "thinking"):
            value = message.get(key)
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"messages[{i}].{key} must be a string", "invalid_request")
            if value:
                slots.append(TextSlot(("messages", i, key), value, role))
        calls = message.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise BadRequest(f"messages[{i}].tool_calls must be a list", "invalid_request")
        for j, call in enumerate(calls or []):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                raise BadRequest(f"messages[{i}].tool_calls[{j}].function must be an object", "invalid_request")
            where: JsonPath = ("messages", i, "tool_calls", j, "function", "arguments")
            slots += json_strings(function.get("arguments"), where, "tool_args")
    return slots


def _unread(view: RequestView, data: dict[str, Any], where: str, keys: tuple[str, ...]) -> None:
    """Input the model reads that has no text to scan, recorded as a gap instead of passed as
    scanned: images (base64: they can hold text, and interlock has no OCR) in `view.media`, under the
    media rule every protocol's images follow (`guardrails.media`), and `/api/generate`'s `context`
    (the token ids of an earlier exchange, whose texts this call does not carry) in
    `view.unscannable`, refused under a `block` action with on_error: deny."""
    for key in keys:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise BadRequest(f"{where}{key} must be a list", "invalid_request")
        if value and key == "images":  # the media rule every protocol's images follow (`view.media`)
            view.media.append(f"{where}images ({len(value)} images)")
        elif value:
            view.unscannable.append(f"{where}{key} ({len(value)} token ids)")


def _embed_texts(data: dict[str, Any]) -> list[TextSlot]:
    """`/api/embed`'s `input` (a string or a list of them), `/api/embeddings`' `prompt`."""
    slots: list[TextSlot] = []
    for key in ("input", "prompt"):
        value = data.get(key)
        if isinstance(value, str):
            slots.append(TextSlot((key,), value, "user"))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise BadRequest(f"{key}[{i}] must be a string", "invalid_request")
                slots.append(TextSlot((key, i), item, "user"))
        elif value is not None:
            raise BadRequest(f"`{key}` must be a string or a list of strings", "invalid_request")
    return slots


def _chat_message(message: dict[str, Any], role: str, where: str) -> ChatMessage:
    calls = [
        ChatToolCall(
            str(function.get("name")), json.dumps(function.get("arguments", {}), ensure_ascii=False), call.get("id")
        )
        for _, call, function in _tool_calls(message)
    ]
    content = message.get("content")
    name = message.get("tool_name") if role == "tool" else None
    return ChatMessage(role, content if isinstance(content, str) else "", where, calls, name=name)


def _counts(view: ResponseView) -> dict[str, Any] | None:
    """The object holding the response's counts: a stream's last line (folded as the events passed),
    or the body; None when it has none (a model loaded, a list of models)."""
    found = view.adapter.stream_usage(view) if view.call.stream else view.message
    if isinstance(found, dict) and ("prompt_eval_count" in found or "eval_count" in found):
        return found
    return None


def _error(code: str, message: str) -> dict[str, Any]:
    """Ollama's error shape, `{"error": "<message>"}` (what its SDKs raise with), and interlock's stable
    code beside it (Ollama's own errors have none; its clients read only `error`)."""
    return {"error": message, "code": code}


__all__ = ["OllamaAdapter"]
