"""Google Gemini wire format (the Gemini Developer API, `generativelanguage.googleapis.com`).

`POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (SSE with `alt=sse`, a JSON
array without: `gemini_stream.py`), `:countTokens`, `:embedContent`, `:batchEmbedContents`. The model
is in the URL, so an alias or fallback rewrites the path. Keys come as `x-goog-api-key` or `?key=`;
the route's key replaces either, sent as `x-goog-api-key` (the query's never goes upstream). Formats
from the API reference (ai.google.dev/api: generate-content, tokens, embeddings) and the google-genai
SDK's own request and stream code (googleapis/python-genai, `models.py`, `_api_client.py`).

The REST API takes proto3 JSON, whose field names may be camelCase (what the SDK sends) or
snake_case: both are read, so a text or tool cannot pass unseen under the other spelling.

Here: the adapter and the response side (usage, texts, tool calls, the conversation, errors, stream
events). The request side (the path, the body's view, the policy's edits) is `gemini_request.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs

from interlock.core.call import Call, Reply
from interlock.core.views import Event, JsonPath, RequestView, ResponseView, TextSlot, TokenUsage, ToolCall
from interlock.protocols import gemini_request
from interlock.protocols.base import (
    Adapter,
    ResponseSummary,
    StreamFramer,
    StreamText,
    Unmetered,
    _json_headers,
    dump_body,
    json_object_body,
    json_strings,
    token_count,
)
from interlock.protocols.conversation import ChatMessage, ChatToolCall, exchange
from interlock.protocols.gemini_request import PATH, get_field, part_texts
from interlock.protocols.gemini_stream import (
    CLOSE,
    FIRST,
    NEXT,
    GeminiSplitter,
    JsonArrayFramer,
    iter_gemini_events,
    reassemble,
)
from interlock.protocols.sse import EventSplitter

#: google.rpc.Code names for the HTTP statuses interlock answers with (Google's error `status`).
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _candidates(response: dict[str, Any]) -> list[Any]:
    """A response's candidates; a malformed body (a non-list `candidates`) reads as none: the call is
    recorded with nothing read from it, never an error of interlock's own (a 500)."""
    candidates = response.get("candidates")
    return candidates if isinstance(candidates, list) else []


def _function_calls(candidates: Any) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(candidate position, part position, functionCall) in a response's candidates."""
    for i, candidate in enumerate(candidates if isinstance(candidates, list) else []):
        content = candidate.get("content") if isinstance(candidate, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        for j, part in enumerate(parts if isinstance(parts, list) else []):
            call = get_field(part, "functionCall", "function_call")[0]
            if isinstance(call, dict):
                yield i, j, call


class GeminiAdapter(Adapter):
    name = "gemini"
    json_body = True
    key_header = "x-goog-api-key"
    key_prefix = ""
    title = "Gemini"
    base_url_env = "GOOGLE_GEMINI_BASE_URL"
    #: The google-genai SDK sends `x-goog-api-key`; REST examples use `?key=`; an OAuth token (a
    #: service account, `gcloud auth print-access-token`) comes as `Authorization: Bearer`. Each is the
    #: agent's credential: a route's key replaces it (never both upstream); without one it passes on
    #: in its own header.
    agent_key_headers = frozenset({"x-goog-api-key", "authorization"})
    bearer_kept = True
    key_query_params = frozenset({"key"})
    provider_name = "gcp.gemini"
    price_provider = "google"
    default_upstream = "https://generativelanguage.googleapis.com"
    default_path = "/v1beta/models/gemini-2.0-flash:generateContent"
    model_api = True
    opaque = False

    def parse(self, call: Call) -> RequestView:
        match = PATH.search(call.path)
        if call.method != "POST" or match is None:
            return RequestView(operation="http")  # listing models, files, caches: relayed as HTTP
        return gemini_request.request_view(json_object_body(call), match.group(2), match.group(3))

    # -- routing and retry ----------------------------------------------------------------------

    def rewrite_model(self, data: Any, path: str, model: str) -> tuple[Any, str] | None:
        match = PATH.search(path)
        if match is None or match.group(2) == model:
            return None
        return gemini_request.rewrite_model(data, path, match, model)

    # -- streams ----------------------------------------------------------------------------------

    def event_splitter(self) -> EventSplitter:
        return GeminiSplitter()  # type: ignore[return-value]  # the same feed/pending/close

    def is_stream(self, content_type: str, call: Call | None = None, status: int = 200) -> bool:
        # Without `alt=sse` the stream is a JSON array sent as `application/json`, written as the
        # model produces it: relayed element by element, not held until the end.
        view = call.view if call is not None else None
        if status == 200 and getattr(view, "stream", False) and content_type.startswith("application/json"):
            return True
        return super().is_stream(content_type, call, status)

    def iter_events(self, body: bytes) -> Iterator[Event]:
        return iter_gemini_events(body)

    def reassemble(self, events: list[dict[str, Any]]) -> Any:
        return reassemble(events)

    def stream_head_and_tail(self, body: bytes, head: int, tail: int) -> bytes:
        raws = [event.raw for event in self.iter_events(body)]
        start, size = 0, 0
        while start < len(raws) and size < head:
            size += len(raws[start])
            start += 1
        end, size = len(raws), 0
        while end > start and size < tail:
            end -= 1
            size += len(raws[end])
        return b"".join(raws[:start] + raws[end:])

    def stream_event(self, event: str | None, data: Any) -> bytes:
        if event == FIRST:
            return b"[" + dump_body(data, separators=None)
        if event == NEXT:
            return b"\n,\r\n" + dump_body(data, separators=None)
        return b"data: " + dump_body(data, separators=None) + b"\r\n\r\n"

    def stream_copy_event(self, event: str | None, data: Any) -> bytes:
        # A copy always follows the element it copies: after a comma in the array framing.
        return self.stream_event(NEXT if event in (FIRST, NEXT) else event, data)

    def stream_framer(self, call: Call) -> StreamFramer | None:
        # Without `alt=sse` the agent asked for the JSON array: the error event below becomes its
        # last element there (JsonArrayFramer), and the SSE form stays right for everyone else.
        if call.stream and parse_qs(call.query).get("alt", ["json"])[-1] != "sse":
            return JsonArrayFramer()
        return None

    def stream_error_event(self, code: str, message: str) -> bytes:
        # Google ends a failing SSE stream with an event holding the error object (in a JSON-array
        # stream, the framer turns this into the array's last element).
        return b"data: " + json.dumps(_error(500, code, message)).encode() + b"\r\n\r\n"

    # -- reading a response -----------------------------------------------------------------------

    def conversation(self, request: Any, response: Any) -> list[ChatMessage]:
        messages: list[ChatMessage] = []
        if isinstance(request, dict):
            system, key = get_field(request, "systemInstruction", "system_instruction")
            if isinstance(system, dict):
                messages += _messages(system, "system", f"request.{key}")
            for i, content in enumerate(request.get("contents") or []):
                if isinstance(content, dict):
                    role = "assistant" if content.get("role") == "model" else "user"
                    messages += _messages(content, role, f"request.contents[{i}]")
        answer: list[ChatMessage] = []
        if isinstance(response, list):  # the JSON-array stream, read as one body
            response = reassemble([r for _, r in _responses(response)])
        if isinstance(response, dict):
            for i, candidate in enumerate(_candidates(response)):
                if isinstance(candidate, dict) and isinstance(candidate.get("content"), dict):
                    answer += _messages(candidate["content"], "assistant", f"response.candidates[{i}]")
        return exchange(messages, answer)

    def read_summary(self, data: Any, summary: ResponseSummary) -> None:
        for _, response in _responses(data):
            summary.take(response.get("responseId"), response.get("modelVersion"))
            reasons = [
                c["finishReason"]
                for c in _candidates(response)
                if isinstance(c, dict) and isinstance(c.get("finishReason"), str)
            ]
            if reasons:
                summary.finish_reasons = reasons

    def fold_usage(self, event: Event, found: Any) -> Any:
        if "usageMetadata" not in event.data:
            return found
        data = event.json()
        metadata = data.get("usageMetadata") if isinstance(data, dict) else None
        return metadata if isinstance(metadata, dict) else found

    def unmetered(self, call: Call) -> Unmetered | None:
        match = PATH.search(call.path)
        if call.method != "POST" or match is None:
            return None
        method = match.group(3)
        if method == "countTokens":
            # Its answer is `{"totalTokens": N}`, a count, not usage; Google documents token counting
            # as free of charge (limited by a request quota only).
            return Unmetered(True, "Gemini countTokens is free (Google bills no tokens for counting)")
        if method in ("embedContent", "batchEmbedContents"):
            # Billed per input token (paid tier), but the Developer API's answer is only the vectors.
            return Unmetered(
                False, f"Gemini {method} is billed per input token but its response carries no token usage"
            )
        return None

    def usage(self, call: Call) -> tuple[int | None, int | None]:
        usage = self.token_usage(call)
        return (usage.input, usage.output) if usage is not None else (None, None)

    def token_usage(self, call: Call) -> TokenUsage | None:
        metadata = self.memoized(call, "usage", _usage_metadata)
        if metadata is None:
            return None
        # promptTokenCount includes the cached tokens; thoughts are billed as output but not counted
        # in candidatesTokenCount; a tool's prompt (code execution, search) is input.
        thoughts = token_count(metadata.get("thoughtsTokenCount"))
        return TokenUsage(
            input=token_count(metadata.get("promptTokenCount")) + token_count(metadata.get("toolUsePromptTokenCount")),
            output=token_count(metadata.get("candidatesTokenCount")) + thoughts,
            cache_read=token_count(metadata.get("cachedContentTokenCount")),
            reasoning=thoughts,
        )

    def response_texts(self, data: Any) -> list[TextSlot]:
        slots: list[TextSlot] = []
        for where, response in _responses(data):
            for i, candidate in enumerate(_candidates(response)):
                if isinstance(candidate, dict):
                    slots += part_texts(candidate.get("content"), (*where, "candidates", i, "content"), "assistant")
        return slots

    def answer_shape_problem(self, data: Any) -> str | None:
        if not isinstance(data, dict | list):
            return "the body is not a JSON object"
        for where, response in _responses(data):
            at = "".join(f"[{i}]" for i in where)
            if response.get("candidates") is not None and not isinstance(response["candidates"], list):
                return f"`{at}candidates` is not a list"
            for i, candidate in enumerate(_candidates(response)):
                content = candidate.get("content") if isinstance(candidate, dict) else None
                if (
                    isinstance(content, dict)
                    and content.get("parts") is not None
                    and not isinstance(content["parts"], list)
                ):
                    return f"`{at}candidates[{i}].content.parts` is not a list"
        return None

    def response_tool_calls(self, data: Any) -> list[ToolCall]:
        return [
            ToolCall(str(call.get("name")), json.dumps(call.get("args", {})), call.get("id"))
            for _, response in _responses(data)
            for _, _, call in _function_calls(response.get("candidates"))
        ]

    def error_reply(self, status: int, code: str, message: str, *, retryable: bool = True) -> Reply:
        return Reply(status, json.dumps(_error(status, code, message)).encode(), _json_headers(retryable))

    # -- policy test cases ------------------------------------------------------------------------

    def sample_body(
        self, path: str, text: str, model: str | None, tools: Sequence[str], tool: tuple[str, Any] | None = None
    ) -> dict[str, Any] | None:
        return gemini_request.sample_body(text, tools)

    # -- policy -----------------------------------------------------------------------------------

    def strip_tools(self, data: Any, names: set[str]) -> list[str]:
        return gemini_request.strip_tools(data, names)

    def set_param(self, data: Any, name: str, value: Any, operation: str) -> list[tuple[str, Any, Any]]:
        return gemini_request.set_param(data, name, value)

    def stream_tool_names(self, event: Any) -> list[str]:
        if "unction" not in event.data:  # functionCall, function_call
            return []
        data = self.event_json(event)
        if not isinstance(data, dict):
            return []
        return [str(call.get("name")) for _, _, call in _function_calls(data.get("candidates"))]

    # -- guardrails -------------------------------------------------------------------------------

    def stream_texts(self, event: str | None, data: Any) -> list[StreamText]:
        if not isinstance(data, dict):
            return []
        texts: list[StreamText] = []
        for i, candidate in enumerate(_candidates(data)):
            if not isinstance(candidate, dict):
                continue
            index = candidate.get("index", i)
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for j, part in enumerate(parts if isinstance(parts, list) else []):
                if not isinstance(part, dict):
                    continue
                where = ("candidates", i, "content", "parts", j)
                if isinstance(part.get("text"), str):
                    # A candidate's text continues from chunk to chunk; thoughts are a text of their own.
                    key = f"candidates.{index}.{'thought' if part.get('thought') else 'text'}"
                    texts.append(StreamText(key, (*where, "text"), part["text"]))
                call, call_key = get_field(part, "functionCall", "function_call")
                if isinstance(call, dict):  # a function call comes whole in one chunk
                    for slot in json_strings(call.get("args"), (*where, call_key, "args"), "tool_args"):
                        key = f"candidates.{index}.call.{'.'.join(map(str, slot.path))}"
                        texts.append(StreamText(key, slot.path, slot.text, delta=False))
        return texts


def _usage_metadata(view: ResponseView) -> dict[str, Any] | None:
    """The response's usageMetadata: a stream's last (each chunk repeats the running totals, folded
    as the events passed: `fold_usage`), a body its own."""
    if view.call.stream:
        folded = view.adapter.stream_usage(view)
        return folded if isinstance(folded, dict) else None
    found: dict[str, Any] | None = None
    for _, response in _responses(view.message):
        metadata = response.get("usageMetadata")
        found = metadata if isinstance(metadata, dict) else found
    return found


def _responses(data: Any) -> list[tuple[JsonPath, dict[str, Any]]]:
    """The GenerateContentResponses in a response body, and where: the body itself, or each element
    of a JSON-array stream (without `alt=sse` it is `application/json`, so the proxy relays and
    reads it as one body)."""
    if isinstance(data, dict):
        return [((), data)]
    if isinstance(data, list):
        return [((i,), item) for i, item in enumerate(data) if isinstance(item, dict)]
    return []


def _messages(content: dict[str, Any], role: str, where: str) -> list[ChatMessage]:
    """A `Content` as chat messages: its texts and function calls as one, each function response as a tool's."""
    texts: list[str] = []
    calls: list[ChatToolCall] = []
    results: list[ChatMessage] = []
    parts = content.get("parts")
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
        call = get_field(part, "functionCall", "function_call")[0]
        if isinstance(call, dict):
            calls.append(ChatToolCall(str(call.get("name")), json.dumps(call.get("args", {})), call.get("id")))
        result = get_field(part, "functionResponse", "function_response")[0]
        if isinstance(result, dict):
            text = json.dumps(result.get("response"), ensure_ascii=False)
            results.append(ChatMessage("tool", text, where, tool_call_id=result.get("id"), name=result.get("name")))
    messages = [ChatMessage(role, "\n".join(texts), where, calls)] if texts or calls else []
    return messages + results


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    """Google's error shape; interlock's stable code rides in a google.rpc.ErrorInfo's `reason`."""
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code, "domain": "interlock"}
    return {
        "error": {"code": status, "message": message, "status": _STATUSES.get(status, "UNKNOWN"), "details": [info]}
    }


__all__ = ["GeminiAdapter", "CLOSE"]
