"""OpenAI's requests: a body to chat completions, the Responses API, embeddings or the legacy
completions read into a `RequestView` (texts with their paths, tools, parameters; what is malformed
refused as a `BadRequest`), and the policy's edits of one (tools stripped, parameters clamped). The
adapter and the response side are `openai.py`; a message's content parts are read here
(`content_texts`) for both. Ollama's chat reads its tools with `checked_tools` and `tool_names`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interlock.core.views import RequestView, TextSlot
from interlock.protocols.base import BadRequest, body_model

_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
)


def content_texts(content: Any, path: tuple[str | int, ...], role: str) -> list[TextSlot]:
    if isinstance(content, str):
        return [TextSlot(path, content, role)]
    slots: list[TextSlot] = []
    if isinstance(content, list):
        for i, part in enumerate(content):
            if isinstance(part, dict):
                # chat: {"type":"text","text":...}; responses: {"type":"input_text"|"output_text","text":...}
                if isinstance(part.get("text"), str) and part.get("type", "text") in (
                    "text",
                    "input_text",
                    "output_text",
                ):
                    slots.append(TextSlot((*path, i, "text"), part["text"], role))
            elif isinstance(part, str):
                slots.append(TextSlot((*path, i), part, role))
    return slots


#: Content parts the model reads that hold no text interlock can scan: chat's `image_url` (a URL
#: counts too: interlock never fetches it), `input_audio`, `file`; Responses' `input_image`,
#: `input_file`, `input_audio`.
_MEDIA = frozenset({"image_url", "input_audio", "file", "input_image", "input_file"})


def _media(view: RequestView, content: Any, path: tuple[str | int, ...]) -> None:
    for i, part in enumerate(content if isinstance(content, list) else ()):
        if isinstance(part, dict) and part.get("type") in _MEDIA:
            view.media_part((*path, i), part["type"])


def _read_inputs(view: RequestView, name: str, value: Any) -> None:
    """A legacy prompt's or an embeddings input's texts: a string, or a list of them (a batch). Token
    ids (a list of ints, or a batch of them) carry the same input with no text to scan: listed in
    `view.unscannable` so the guardrails see the gap instead of a request with nothing in it."""
    if isinstance(value, str):
        view.texts.append(TextSlot((name,), value, "user"))
    elif isinstance(value, list):
        if value and all(isinstance(item, int) for item in value):
            view.unscannable.append(f"{name} (token ids)")
            return
        for i, item in enumerate(value):
            if isinstance(item, str):
                view.texts.append(TextSlot((name, i), item, "user"))
            elif isinstance(item, list) and item:
                view.unscannable.append(f"{name}[{i}] (token ids)")


def request_view(data: dict[str, Any], path: str) -> RequestView:
    """The view of a request body POSTed to `path`; a malformed one is a `BadRequest`."""
    model = body_model(data)
    stream = data.get("stream") is True
    view = RequestView(operation="http", model=model, stream=stream)
    view.params = {k: data[k] for k in _PARAMS if k in data}
    _check_tool_choice(data.get("tool_choice"))
    if path.endswith("/chat/completions"):
        view.operation = "chat"
        messages = data.get("messages")
        if not isinstance(messages, list):
            raise BadRequest("`messages` must be a list", "invalid_request")
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise BadRequest(f"messages[{i}] must be an object", "invalid_request")
            role = str(message.get("role", "user"))
            role = "system" if role == "developer" else role
            view.texts += content_texts(message.get("content"), ("messages", i, "content"), role)
            _media(view, message.get("content"), ("messages", i, "content"))
            tool_calls = message.get("tool_calls")
            if tool_calls is not None and not isinstance(tool_calls, list):
                raise BadRequest(f"messages[{i}].tool_calls must be a list", "invalid_request")
            for j, tool_call in enumerate(tool_calls or []):
                if not isinstance(tool_call, dict):
                    raise BadRequest(f"messages[{i}].tool_calls[{j}] must be an object", "invalid_request")
                function = tool_call.get("function")
                if function is not None and not isinstance(function, dict):
                    raise BadRequest(f"messages[{i}].tool_calls[{j}].function must be an object", "invalid_request")
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    view.texts.append(
                        TextSlot(
                            ("messages", i, "tool_calls", j, "function", "arguments"),
                            function["arguments"],
                            "tool_args",
                        )
                    )
        view.tools = tool_names(checked_tools(data.get("tools")))
    elif path.endswith("/responses"):
        view.operation = "responses"
        if isinstance(data.get("instructions"), str):
            view.texts.append(TextSlot(("instructions",), data["instructions"], "system"))
        items = data.get("input")
        if items is not None and not isinstance(items, str | list):
            raise BadRequest("`input` must be a string or a list", "invalid_request")
        if isinstance(items, str):
            view.texts.append(TextSlot(("input",), items, "user"))
        elif isinstance(items, list):
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    continue
                kind = item.get("type", "message")
                if kind == "message":
                    view.texts += content_texts(
                        item.get("content"), ("input", i, "content"), str(item.get("role", "user"))
                    )
                    _media(view, item.get("content"), ("input", i, "content"))
                elif kind == "function_call_output" and isinstance(item.get("output"), str):
                    view.texts.append(TextSlot(("input", i, "output"), item["output"], "tool_result"))
                elif kind == "function_call" and isinstance(item.get("arguments"), str):
                    view.texts.append(TextSlot(("input", i, "arguments"), item["arguments"], "tool_args"))
        view.tools = tool_names(checked_tools(data.get("tools")))
    elif path.endswith("/embeddings"):
        view.operation = "embeddings"
        _read_inputs(view, "input", data.get("input"))
    elif path.endswith("/completions"):
        # The legacy completions API: `prompt` is a string or a list of them (a batch), and
        # `suffix` is text the model reads too.
        view.operation = "text_completion"
        _read_inputs(view, "prompt", data.get("prompt"))
        if isinstance(data.get("suffix"), str):
            view.texts.append(TextSlot(("suffix",), data["suffix"], "user"))
    return view


def sample_body(path: str, text: str, model: str | None, tools: Sequence[str]) -> dict[str, Any]:
    """A `policy test` case's body: a chat completion, or a Responses API call for a `/responses` path."""
    body: dict[str, Any] = {"model": model} if model is not None else {}
    if path.endswith("/responses"):
        body["input"] = text
        if tools:
            body["tools"] = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in tools]
    else:
        body["messages"] = [{"role": "user", "content": text}]
        if tools:
            body["tools"] = [
                {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in tools
            ]
    return body


def checked_tools(tools: Any) -> Any:
    """The request's `tools`, refused (400) unless a list of objects whose names are strings."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise BadRequest("`tools` must be a list", "invalid_request")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{i}] must be an object", "invalid_request")
        function = tool.get("function")
        if function is not None and not isinstance(function, dict):
            raise BadRequest(f"tools[{i}].function must be an object", "invalid_request")
        for where, name in (("function.name", (function or {}).get("name")), ("name", tool.get("name"))):
            if name is not None and not isinstance(name, str):
                raise BadRequest(f"tools[{i}].{where} must be a string", "invalid_request")
    return tools


def _check_tool_choice(choice: Any) -> None:
    """`tool_choice` is a string or an object; a name in it is a string."""
    if choice is None or isinstance(choice, str):
        return
    if not isinstance(choice, dict):
        raise BadRequest("`tool_choice` must be a string or an object", "invalid_request")
    function = choice.get("function")
    if function is not None and not isinstance(function, dict):
        raise BadRequest("tool_choice.function must be an object", "invalid_request")
    for where, name in (("function.name", (function or {}).get("name")), ("name", choice.get("name"))):
        if name is not None and not isinstance(name, str):
            raise BadRequest(f"tool_choice.{where} must be a string", "invalid_request")


def tool_names(tools: Any) -> list[str]:
    names: list[str] = []
    for tool in tools or []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.append(function["name"])  # chat completions
        elif isinstance(tool.get("name"), str):
            names.append(tool["name"])  # responses API
    return names


_MAX_TOKENS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def strip_tools(data: Any, names: set[str]) -> list[str]:
    """`Adapter.strip_tools`: the named tools out of `tools` (and `tool_choice` when it names one)."""
    tools = data.get("tools") if isinstance(data, dict) else None
    if not isinstance(tools, list):
        return []
    kept: list[Any] = []
    removed: list[Any] = []
    for tool in tools:
        name = tool_names([tool])
        (removed if name and name[0] in names else kept).append(tool)
    if not removed:
        return []
    removed_names = tool_names(removed)
    choice = data.get("tool_choice")
    if isinstance(choice, dict):  # {"type":"function","function":{"name":...}} or {"type":"function","name":...}
        function = choice.get("function")
        chosen = (function.get("name") if isinstance(function, dict) else None) or choice.get("name")
        if isinstance(chosen, str) and chosen in names:
            data.pop("tool_choice")
    if kept:
        data["tools"] = kept
    else:  # the API rejects tool_choice and parallel_tool_calls without tools
        for key in ("tools", "tool_choice", "parallel_tool_calls"):
            data.pop(key, None)
    return removed_names


def set_param(data: Any, name: str, value: Any, operation: str) -> list[tuple[str, Any, Any]]:
    """`Adapter.set_param`: the token limit under each spelling the body uses (or the operation's own)."""
    if not isinstance(data, dict):
        return []
    if name in _MAX_TOKENS:
        # One limit, three spellings: chat's max_tokens / max_completion_tokens, Responses' max_output_tokens.
        present = [k for k in _MAX_TOKENS if k in data]
        native = (
            "max_output_tokens" if operation == "responses" else name if name != "max_output_tokens" else "max_tokens"
        )
        return [change for key in (present or [native]) if (change := _set(data, key, value)) is not None]
    change = _set(data, name, value)
    return [change] if change is not None else []


def _set(data: dict[str, Any], key: str, value: Any) -> tuple[str, Any, Any] | None:
    """Clamp a number (the value is an upper bound; set when absent) or set anything else."""
    old = data.get(key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and isinstance(old, (int, float)) and not isinstance(old, bool):
        if old <= value:
            return None
    elif key in data and old == value:
        return None
    data[key] = value
    return key, old, value
