"""A streamed response put back together as the one JSON message the non-streamed call would return:
the helpers behind the adapters' `reassemble` (`Adapter.reassemble_stream` splits and parses).

The store keeps streams as timed chunks (for replay) and, through this, as the reassembled message
(for reading and search): OpenAI chat → a `chat.completion`, OpenAI Responses → the final
`response`, Anthropic → a `message`; MCP → the list of JSON-RPC messages. Runs in the recorder's
writer thread, never on the event loop.

Complete means: every field the non-streamed API returns for the same answer, so the result
validates as the SDKs' own models (`openai.types.chat.ChatCompletion`,
`openai.types.responses.Response`, `anthropic.types.Message`) and equals the non-streamed body
(tests/protocols/test_reassemble.py). What each format streams, from the providers' API references
(OpenAI "Streaming events" for chat chunks and Responses; Anthropic "Streaming messages") and
real recordings:

- Anthropic: `message_start` carries the message without content; `content_block_start` each
  block whole but empty (`text`, `thinking`, `redacted_thinking` — complete at start —,
  `tool_use`, `server_tool_use`, `mcp_tool_use`, `web_search_tool_result` and the other tool
  results — complete at start); `content_block_delta` appends `text_delta`, `citations_delta`
  (one citation), `thinking_delta`, `signature_delta`, `input_json_delta` (the tool input as JSON
  text, parsed at the end); `message_delta` sets `stop_reason`/`stop_sequence`/`container` and
  the final usage (merged: it repeats only what changed).
- OpenAI chat: chunks per choice with a `delta` (`role`, `content`, `refusal`, `tool_calls`
  pieces by `index`, the legacy `function_call`), `logprobs` (`content`/`refusal` token lists,
  concatenated), `finish_reason`; with `stream_options.include_usage` a last chunk with
  `choices: []` and the `usage`.
- OpenAI Responses: `response.completed` (or `.incomplete` / `.failed`) carries the whole final
  response and is taken as is. A stream cut before it is rebuilt from `response.created`, each
  `response.output_item.added`/`.done` (any item type: message, function_call, reasoning,
  web_search_call, file_search_call, code_interpreter_call, image_generation_call, mcp_call, ...)
  and the deltas in between, so the message says exactly what the agent saw.
"""

from __future__ import annotations

import json
from typing import Any


def openai_message(events: list[dict[str, Any]]) -> dict[str, Any]:
    """An OpenAI stream's events as the chat completion, or the Responses API's response."""
    for event in events:
        kind = event.get("type")  # absent from chat chunks: no str() of it per event
        if kind is not None and str(kind).startswith("response."):
            return _joined(_openai_response(events))  # type: ignore[no-any-return]
    return _joined(_openai_chat(events))  # type: ignore[no-any-return]


def anthropic_message(events: list[dict[str, Any]]) -> dict[str, Any]:
    """An Anthropic stream's events as the message."""
    return _joined(_anthropic(events))  # type: ignore[no-any-return]


# -- text built from pieces, in linear time -------------------------------------------------------


class _Text(list[str]):
    """A string being streamed in pieces: `a + b` per delta copies everything so far (a 16 MB
    stream took 30 s to reassemble, 128 MB over a minute); pieces joined once at the end do not."""


def _append(target: dict[Any, Any], key: Any, piece: str) -> None:
    """`target[key] += piece`, in amortised O(len(piece))."""
    value = target.get(key)
    if type(value) is _Text:
        value.append(piece)
    else:
        target[key] = _Text([value, piece] if isinstance(value, str) and value else [piece])


def _joined(value: Any) -> Any:
    """`value` with every `_Text` in it joined into a str (in place; returns it)."""
    if type(value) is _Text:
        return "".join(value)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list):
                value[key] = _joined(item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict | list):
                value[i] = _joined(item)
    return value


# -- OpenAI chat completions ---------------------------------------------------------------------

#: Top-level chunk fields that the completion carries once (the first chunk that has one wins).
_CHAT_TOP = ("id", "created", "model", "system_fingerprint", "service_tier")


def _openai_chat(events: list[dict[str, Any]]) -> dict[str, Any]:
    # Runs for every event of every recorded stream (in the writer thread): the dicts a choice starts
    # as are built once per choice, not per event, and a delta holding only text (most of them) takes
    # a short path. The message is the same, key order included (it is stored and chained).
    message: dict[str, Any] = {"object": "chat.completion", "choices": []}
    choices: dict[int, dict[str, Any]] = {}
    for event in events:
        for key in _CHAT_TOP:
            if key in event and key not in message:
                message[key] = event[key]
        if event.get("usage"):
            message["usage"] = event["usage"]
        if "error" in event:
            message["error"] = event["error"]
        for delta_choice in event.get("choices") or []:
            if not isinstance(delta_choice, dict):
                continue
            index = delta_choice.get("index", 0)
            choice = choices.get(index)
            if choice is None:
                choice = choices[index] = {
                    "index": index,
                    "message": {"role": "assistant", "content": None, "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            delta = delta_choice.get("delta") or {}
            text = delta.get("content") if len(delta) == 1 else None
            if text.__class__ is str:  # only `content`, a str: what `_chat_delta` would do with it
                _append(choice["message"], "content", text)
            else:
                _chat_delta(choice["message"], delta)
            logprobs = delta_choice.get("logprobs")
            if logprobs is not None:
                _chat_logprobs(choice, logprobs)
            if delta_choice.get("finish_reason"):
                choice["finish_reason"] = delta_choice["finish_reason"]
    message["choices"] = [choices[i] for i in sorted(choices)]
    return message


def _chat_delta(target: dict[str, Any], delta: dict[str, Any]) -> None:
    if delta.get("role"):
        target["role"] = delta["role"]
    for key in ("content", "refusal"):
        if isinstance(delta.get(key), str):
            _append(target, key, delta[key])
    for key in ("annotations", "audio"):
        if delta.get(key) is not None:
            target[key] = delta[key]
    if isinstance(delta.get("function_call"), dict):  # the legacy single function call
        call = target.setdefault("function_call", {"name": "", "arguments": ""})
        _append(call, "name", delta["function_call"].get("name") or "")
        _append(call, "arguments", delta["function_call"].get("arguments") or "")
    for piece in delta.get("tool_calls") or []:
        if not isinstance(piece, dict):
            continue
        calls = target.setdefault("tool_calls", [])
        slot = piece.get("index", len(calls))
        while len(calls) <= slot:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[slot]
        if piece.get("id"):
            call["id"] = piece["id"]
        if piece.get("type"):
            call["type"] = piece["type"]
        function = piece.get("function") or {}
        _append(call["function"], "name", function.get("name") or "")
        _append(call["function"], "arguments", function.get("arguments") or "")


def _chat_logprobs(choice: dict[str, Any], logprobs: Any) -> None:
    if not isinstance(logprobs, dict):
        return
    merged = choice["logprobs"] or {"content": None, "refusal": None}
    for key in ("content", "refusal"):
        if isinstance(logprobs.get(key), list):
            if merged[key] is None:
                merged[key] = []
            merged[key].extend(logprobs[key])  # in place: a copy per chunk was quadratic
    choice["logprobs"] = merged


# -- OpenAI Responses ------------------------------------------------------------------------------

_FINAL = ("response.completed", "response.incomplete", "response.failed")


def _openai_response(events: list[dict[str, Any]]) -> dict[str, Any]:
    response: dict[str, Any] = {"object": "response", "status": "incomplete", "output": []}
    items: dict[int, dict[str, Any]] = {}
    final: dict[str, Any] | None = None
    for event in events:
        kind = str(event.get("type", ""))
        if isinstance(event.get("response"), dict):
            if kind in _FINAL:
                final = dict(event["response"])
            else:  # response.created, response.in_progress, response.queued
                response.update(event["response"])
        elif kind == "error":
            response["error"] = {k: v for k, v in event.items() if k not in ("type", "sequence_number")}
        else:
            _response_event(items, kind, event)
    if final is not None:
        if not final.get("output") and items:
            # Some servers send the final response without its items; the stream had them.
            final["output"] = [items[i] for i in sorted(items)]
        return final
    # A stream cut short: what the agent did see.
    response["status"] = (
        "incomplete" if response.get("status") in (None, "in_progress", "queued") else response["status"]
    )
    response["output"] = [items[i] for i in sorted(items)]
    return response


def _response_event(items: dict[int, dict[str, Any]], kind: str, event: dict[str, Any]) -> None:
    index = event.get("output_index")
    if kind in ("response.output_item.added", "response.output_item.done") and isinstance(event.get("item"), dict):
        items[index if isinstance(index, int) else len(items)] = dict(event["item"])
        return
    if not isinstance(index, int):
        index = max(items, default=0)
    if index not in items:
        if kind not in ("response.output_text.delta", "response.refusal.delta"):
            return
        # Text whose item was never announced (a server that skips output_item.added): still what the agent saw.
        items[index] = {"type": "message", "role": "assistant", "status": "in_progress", "content": []}
        if isinstance(event.get("item_id"), str):
            items[index]["id"] = event["item_id"]
    item = items[index]
    delta = event.get("delta")
    if kind in ("response.content_part.added", "response.content_part.done") and isinstance(event.get("part"), dict):
        _put(item.setdefault("content", []), event.get("content_index", 0), dict(event["part"]))
    elif kind in ("response.output_text.delta", "response.refusal.delta") and isinstance(delta, str):
        part = _part(item, "content", event.get("content_index", 0), "output_text" if "text" in kind else "refusal")
        key = "text" if "text" in kind else "refusal"
        _append(part, key, delta)
        if isinstance(event.get("logprobs"), list) and event["logprobs"]:
            part.setdefault("logprobs", []).extend(event["logprobs"])
    elif kind == "response.output_text.annotation.added" and isinstance(event.get("annotation"), dict):
        part = _part(item, "content", event.get("content_index", 0), "output_text")
        _put(part.setdefault("annotations", []), event.get("annotation_index", 0), event["annotation"])
    elif kind in (
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.mcp_call_arguments.delta",
    ):
        key = "input" if "custom_tool" in kind else "arguments"
        if isinstance(delta, str):
            _append(item, key, delta)
    elif kind == "response.code_interpreter_call_code.delta" and isinstance(delta, str):
        _append(item, "code", delta)
    elif kind in ("response.function_call_arguments.done", "response.mcp_call_arguments.done"):
        if isinstance(event.get("arguments"), str):
            item["arguments"] = event["arguments"]
    elif kind == "response.reasoning_summary_part.added" and isinstance(event.get("part"), dict):
        _put(item.setdefault("summary", []), event.get("summary_index", 0), dict(event["part"]))
    elif kind == "response.reasoning_summary_text.delta" and isinstance(delta, str):
        part = _part(item, "summary", event.get("summary_index", 0), "summary_text")
        _append(part, "text", delta)
    elif kind == "response.reasoning_text.delta" and isinstance(delta, str):
        part = _part(item, "content", event.get("content_index", 0), "reasoning_text")
        _append(part, "text", delta)


def _part(item: dict[str, Any], key: str, index: Any, kind: str) -> dict[str, Any]:
    parts = item.setdefault(key, [])
    slot = index if isinstance(index, int) and index >= 0 else 0
    while len(parts) <= slot:
        parts.append({"type": kind, "text": ""} if kind != "refusal" else {"type": kind, "refusal": ""})
    part: dict[str, Any] = parts[slot]
    return part


def _put(values: list[Any], index: Any, value: Any) -> None:
    slot = index if isinstance(index, int) and index >= 0 else len(values)
    while len(values) <= slot:
        values.append(None)
    values[slot] = value


# -- Anthropic messages --------------------------------------------------------------------------

#: Blocks whose input streams as `input_json_delta` (the start carries `input: {}`).
_JSON_INPUT = ("tool_use", "server_tool_use", "mcp_tool_use")


def _anthropic(events: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "message", "role": "assistant", "content": []}
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, _Text] = {}
    for event in events:
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message.update({k: v for k, v in event["message"].items() if k != "content"})
        elif kind == "content_block_start":
            index = event.get("index", len(blocks))
            blocks[index] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta":
            index = event.get("index", 0)
            block = blocks.setdefault(index, {"type": "text", "text": ""})
            delta = event.get("delta") or {}
            _anthropic_delta(block, delta, partial, index)
        elif kind == "message_delta":
            message.update(event.get("delta") or {})
            if isinstance(event.get("usage"), dict):
                usage = {k: v for k, v in event["usage"].items() if v is not None}
                message["usage"] = {**(message.get("usage") or {}), **usage}
        elif kind == "error":
            message["error"] = event.get("error")
    for index, pieces in partial.items():
        text = "".join(pieces)
        try:
            blocks[index]["input"] = json.loads(text) if text else {}
        except ValueError:  # JSON's errors, and a number past Python's int-string limit
            blocks[index]["input"] = text  # cut mid-way: what the agent saw
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message


def _anthropic_delta(block: dict[str, Any], delta: dict[str, Any], partial: dict[int, _Text], index: int) -> None:
    kind = delta.get("type")
    if kind == "text_delta":
        _append(block, "text", str(delta.get("text", "")))
    elif kind == "input_json_delta":
        partial.setdefault(index, _Text()).append(str(delta.get("partial_json") or ""))
    elif kind == "thinking_delta":
        _append(block, "thinking", str(delta.get("thinking", "")))
    elif kind == "signature_delta":
        _append(block, "signature", str(delta.get("signature", "")))
    elif kind == "citations_delta" and delta.get("citation") is not None:
        citations = block.get("citations")
        if not isinstance(citations, list):
            block["citations"] = citations = []
        citations.append(delta["citation"])  # in place: a copy per delta was quadratic
