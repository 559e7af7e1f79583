"""Gemini's requests: the path (model and method), the body read into a `RequestView` (texts, tools,
parameters) and the policy's edits of it (tools stripped, parameters clamped); also how a `Content`'s
parts are read (`part_texts`), which a response's candidates carry too (`gemini.py`, the adapter and
the response side). proto3 JSON: every field is read under both spellings (`get_field`)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from interlock.core.views import JsonPath, RequestView, TextSlot
from interlock.protocols.base import BadRequest, json_strings

#: `/v1beta/models/gemini-2.0-flash:generateContent` (also `tunedModels/...`): the model and the method.
PATH = re.compile(r"/((?:tuned)?[mM]odels)/([^/:]+):([A-Za-z]+)$")
_OPERATIONS = {
    "generateContent": "chat",
    "streamGenerateContent": "chat",
    "countTokens": "chat",
    "embedContent": "embeddings",
    "batchEmbedContents": "embeddings",
}
#: generationConfig's fields as the request parameters policies and OTel name (`max_tokens`, ...).
_PARAMS = {
    "maxOutputTokens": "max_tokens",
    "max_output_tokens": "max_tokens",
    "temperature": "temperature",
    "topP": "top_p",
    "top_p": "top_p",
    "topK": "top_k",
    "top_k": "top_k",
    "stopSequences": "stop_sequences",
    "stop_sequences": "stop_sequences",
    "candidateCount": "candidate_count",
    "candidate_count": "candidate_count",
}
_NATIVE = {
    "max_tokens": "maxOutputTokens",
    "max_output_tokens": "maxOutputTokens",
    "max_completion_tokens": "maxOutputTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
}


def get_field(data: Any, camel: str, snake: str) -> tuple[Any, str]:
    """A field under either spelling, and the spelling found (camelCase when absent)."""
    if isinstance(data, dict):
        if camel in data:
            return data[camel], camel
        if snake in data:
            return data[snake], snake
    return None, camel


def part_texts(content: Any, path: JsonPath, role: str, view: RequestView | None = None) -> list[TextSlot]:
    """The texts of one `Content`: text parts, function call arguments and function responses; a
    request's `inlineData` and `fileData` parts (images, audio, video, files) listed in `view.media`,
    as interlock cannot read them."""
    if not isinstance(content, dict):
        return []
    parts = content.get("parts")
    if not isinstance(parts, list):
        return []
    slots: list[TextSlot] = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            continue
        where = (*path, "parts", j)
        if isinstance(part.get("text"), str):
            slots.append(TextSlot((*where, "text"), part["text"], role))
        call, key = get_field(part, "functionCall", "function_call")
        if isinstance(call, dict):
            slots += json_strings(call.get("args"), (*where, key, "args"), "tool_args")
        result, key = get_field(part, "functionResponse", "function_response")
        if isinstance(result, dict):
            slots += json_strings(result.get("response"), (*where, key, "response"), "tool_result")
        if view is not None:
            for camel, snake in (("inlineData", "inline_data"), ("fileData", "file_data")):
                media, key = get_field(part, camel, snake)
                if media is not None:
                    view.media_part(where, key)
    return slots


def _contents(data: dict[str, Any], path: JsonPath, view: RequestView) -> list[TextSlot]:
    contents = data.get("contents")
    if contents is None:
        return []
    if not isinstance(contents, list):
        raise BadRequest("`contents` must be a list", "invalid_request")
    slots: list[TextSlot] = []
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise BadRequest(f"contents.{i} must be an object", "invalid_request")
        role = "assistant" if content.get("role") == "model" else "user"
        slots += part_texts(content, (*path, "contents", i), role, view)
    return slots


def _declarations(data: Any) -> Iterator[tuple[dict[str, Any], str, list[Any]]]:
    """Each tool object with function declarations: (tool, the key they are under, the list)."""
    tools = data.get("tools") if isinstance(data, dict) else None
    for tool in tools if isinstance(tools, list) else []:
        declarations, key = get_field(tool, "functionDeclarations", "function_declarations")
        if isinstance(declarations, list):
            yield tool, key, declarations


def _tool_names(data: dict[str, Any]) -> list[str]:
    tools = data.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("`tools` must be a list", "invalid_request")
    names: list[str] = []
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools.{i} must be an object", "invalid_request")
        declarations, key = get_field(tool, "functionDeclarations", "function_declarations")
        if declarations is None:
            continue
        if not isinstance(declarations, list):
            raise BadRequest(f"tools.{i}.{key} must be a list", "invalid_request")
        for j, declaration in enumerate(declarations):
            name = declaration.get("name") if isinstance(declaration, dict) else None
            if not isinstance(name, str):
                raise BadRequest(f"tools.{i}.{key}.{j}.name must be a string", "invalid_request")
            names.append(name)
    return names


def request_view(data: dict[str, Any], model: str, method: str) -> RequestView:
    """The view of a request body to `models/{model}:{method}`; a malformed one is a `BadRequest`."""
    view = RequestView(
        operation=_OPERATIONS.get(method, "http"),
        model=model,
        stream=method == "streamGenerateContent",
    )
    config = get_field(data, "generationConfig", "generation_config")[0]
    if isinstance(config, dict):
        view.params = {_PARAMS[k]: v for k, v in config.items() if k in _PARAMS}
    system, key = get_field(data, "systemInstruction", "system_instruction")
    view.texts += part_texts(system, (key,), "system", view)
    view.texts += _contents(data, (), view)
    # countTokens may wrap a whole generateContent request.
    wrapped, key = get_field(data, "generateContentRequest", "generate_content_request")
    if isinstance(wrapped, dict):
        system, system_key = get_field(wrapped, "systemInstruction", "system_instruction")
        view.texts += part_texts(system, (key, system_key), "system", view)
        view.texts += _contents(wrapped, (key,), view)
        view.tools += _tool_names(wrapped)
    view.texts += part_texts(data.get("content"), ("content",), "user", view)  # embedContent
    requests = data.get("requests")  # batchEmbedContents
    if requests is not None and not isinstance(requests, list):
        raise BadRequest("`requests` must be a list", "invalid_request")
    for i, request in enumerate(requests or []):
        view.texts += part_texts(
            request.get("content") if isinstance(request, dict) else None, ("requests", i, "content"), "user", view
        )
    view.tools += _tool_names(data)
    return view


def rewrite_model(data: Any, path: str, match: re.Match[str], model: str) -> tuple[Any, str]:
    """The body and path of a request `PATH` matched, asking for `model` instead."""
    new_path = path[: match.start(2)] + model + path[match.end(2) :]
    requests = data.get("requests") if isinstance(data, dict) else None
    if isinstance(requests, list):  # each batch item names the model again, and must match the URL's
        name = f"{match.group(1)}/{model}"
        data = {
            **data,
            "requests": [{**r, "model": name} if isinstance(r, dict) and "model" in r else r for r in requests],
        }
    return data, new_path


def sample_body(text: str, tools: Sequence[str]) -> dict[str, Any]:
    """A `policy test` case's generateContent body: asking about `text` with these tools offered."""
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if tools:
        body["tools"] = [{"functionDeclarations": [{"name": n} for n in tools]}]
    return body


def strip_tools(data: Any, names: set[str]) -> list[str]:
    """`Adapter.strip_tools`: the named function declarations out of the body (and out of
    `toolConfig`'s allowed names)."""
    removed: list[str] = []
    for tool, key, declarations in list(_declarations(data)):
        kept = [d for d in declarations if not (isinstance(d, dict) and d.get("name") in names)]
        removed += [d["name"] for d in declarations if isinstance(d, dict) and d.get("name") in names]
        tool[key] = kept
        if not kept:
            del tool[key]
    if not removed:
        return []
    data["tools"] = [t for t in data["tools"] if not (isinstance(t, dict) and not t)]
    if not data["tools"]:
        del data["tools"]
    left = [d for _, _, declarations in _declarations(data) for d in declarations]
    config, key = get_field(data, "toolConfig", "tool_config")
    calling = get_field(config, "functionCallingConfig", "function_calling_config")[0]
    if isinstance(calling, dict):
        allowed, allowed_key = get_field(calling, "allowedFunctionNames", "allowed_function_names")
        if isinstance(allowed, list):
            calling[allowed_key] = [n for n in allowed if n not in names]
            if not calling[allowed_key]:
                del calling[allowed_key]
        if not left:  # `mode: ANY` with nothing to call is an error upstream
            del data[key]
    return removed


def set_param(data: Any, name: str, value: Any) -> list[tuple[str, Any, Any]]:
    """`Adapter.set_param`: in `generationConfig`, under the spelling the body already uses."""
    if not isinstance(data, dict) or name not in _NATIVE:
        return []
    config, key = get_field(data, "generationConfig", "generation_config")
    if not isinstance(config, dict):
        config = data[key] = {}
    native = _NATIVE[name]
    spelled = next((k for k, v in _PARAMS.items() if v == _PARAMS.get(native) and k in config), native)
    old = config.get(spelled)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and isinstance(old, (int, float)) and not isinstance(old, bool):
        if old <= value:
            return []
    elif spelled in config and old == value:
        return []
    config[spelled] = value
    return [(_PARAMS[native], old, value)]
