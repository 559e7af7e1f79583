"""A finished Call → OpenTelemetry attributes, by the GenAI, MCP and HTTP semantic conventions.

Attribute names come from the installed `opentelemetry-semantic-conventions` package. Its GenAI and
MCP names are marked "moved to the GenAI semantic conventions repository" there (0.66b2), which
ships no Python package yet: the names are unchanged, so they are used as shipped.
"""

from __future__ import annotations

import functools
import json
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.attributes import jsonrpc_attributes as jsonrpc
from opentelemetry.semconv._incubating.attributes import mcp_attributes as mcp
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes, url_attributes

from interlock.core.call import SOUND_OUTCOMES, Attempt, Call
from interlock.core.views import RequestView, TextSlot
from interlock.protocols import ADAPTERS, BadRequest, ResponseSummary
from interlock.protocols.base import decoded_body
from interlock.protocols.summary import output_texts, response_message, summarize_response

Attributes = dict[str, Any]

#: The protocol's own operation names → `gen_ai.operation.name`.
OPERATIONS = {"chat": "chat", "responses": "chat", "embeddings": "embeddings", "text_completion": "text_completion"}
#: Well-known provider hosts → `gen_ai.provider.name` (otherwise the route's protocol).
PROVIDER_HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.mistral.ai": "mistral_ai",
    "api.x.ai": "x_ai",
    "api.perplexity.ai": "perplexity",
    "api.cohere.com": "cohere",
}

_NUMBER_PARAMS = {
    "temperature": gen_ai.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": gen_ai.GEN_AI_REQUEST_TOP_P,
    "top_k": gen_ai.GEN_AI_REQUEST_TOP_K,
    "frequency_penalty": gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY,
    "presence_penalty": gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY,
    "seed": gen_ai.GEN_AI_REQUEST_SEED,
    "max_tokens": gen_ai.GEN_AI_REQUEST_MAX_TOKENS,
    "max_completion_tokens": gen_ai.GEN_AI_REQUEST_MAX_TOKENS,
    "max_output_tokens": gen_ai.GEN_AI_REQUEST_MAX_TOKENS,
}


@functools.lru_cache(maxsize=512)
def host_port(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    return parts.hostname, port


def provider_name(call: Call, host: str | None) -> str:
    if host:
        known = PROVIDER_HOSTS.get(host)
        if known:
            return known
        if host.endswith(".openai.azure.com"):
            return "azure.ai.openai"
    adapter = ADAPTERS.get(call.protocol)
    return (adapter.provider_name if adapter is not None else None) or call.protocol


class Described:
    """What the call span is called and says, and what its metrics are keyed by."""

    __slots__ = ("name", "attributes", "metric_attributes", "metric_key", "operation")

    def __init__(self, name: str, attributes: Attributes, metric_attributes: Attributes, operation: str | None):
        self.name = name
        self.attributes = attributes
        self.metric_attributes = metric_attributes
        self.metric_key = tuple(metric_attributes.items())  # the metrics' points are keyed by it
        self.operation = operation


def describe_call(call: Call, *, capture_content: bool = False, content_max_chars: int = 0) -> Described:
    """The call span's name and attributes (GenAI, MCP or plain HTTP), and the metric dimensions."""
    view = call.view
    last = call.attempts[-1] if call.attempts else None
    host, port = host_port(last.url) if last is not None else (None, None)
    attrs: Attributes = {
        "interlock.call.id": call.id,
        "interlock.route": call.route,
        "interlock.outcome": call.outcome,
        gen_ai.GEN_AI_AGENT_NAME: call.agent,
    }
    metric: Attributes = {}
    if host:
        attrs[server_attributes.SERVER_ADDRESS] = metric[server_attributes.SERVER_ADDRESS] = host
        if port:
            attrs[server_attributes.SERVER_PORT] = metric[server_attributes.SERVER_PORT] = port
    if call.session:
        attrs[gen_ai.GEN_AI_CONVERSATION_ID] = call.session
    if call.workflow:  # the multi-agent workflow (docs/workflows.md): no GenAI convention names one yet
        attrs["interlock.workflow"] = call.workflow
    if call.status is not None:
        attrs[http_attributes.HTTP_RESPONSE_STATUS_CODE] = call.status
    if call.outcome not in SOUND_OUTCOMES:
        error_type = call.error_code or call.outcome
        attrs[error_attributes.ERROR_TYPE] = metric[error_attributes.ERROR_TYPE] = error_type
    if call.truncated:
        attrs["interlock.truncated"] = True
    if call.rescued:
        attrs["interlock.rescued"] = True
    if call.cost_source is not None:
        # No GenAI semantic convention for cost yet: interlock's own names (docs/otel.md).
        attrs["interlock.cost.source"] = call.cost_source
        if call.cost_usd is not None:
            attrs["interlock.cost.usd"] = call.cost_usd
    if len(call.attempts) > 1:
        attrs["interlock.attempts"] = len(call.attempts)
    operation = OPERATIONS.get(view.operation) if view is not None else None
    if ADAPTERS[call.protocol].is_jsonrpc and view is not None:
        name = _describe_mcp(call, view, attrs, metric)
        operation = attrs.get(gen_ai.GEN_AI_OPERATION_NAME)
    elif operation is not None and view is not None:
        name = _describe_model_call(call, view, operation, host, attrs, metric)
        if capture_content:
            _add_content(call, attrs, content_max_chars)
    else:
        name = call.method
        attrs[http_attributes.HTTP_REQUEST_METHOD] = call.method
    return Described(name, attrs, metric, operation)


def _describe_model_call(
    call: Call, view: RequestView, operation: str, host: str | None, attrs: Attributes, metric: Attributes
) -> str:
    provider = provider_name(call, host)
    attrs[gen_ai.GEN_AI_OPERATION_NAME] = metric[gen_ai.GEN_AI_OPERATION_NAME] = operation
    attrs[gen_ai.GEN_AI_PROVIDER_NAME] = metric[gen_ai.GEN_AI_PROVIDER_NAME] = provider
    model = call.model or view.model
    if model:
        attrs[gen_ai.GEN_AI_REQUEST_MODEL] = metric[gen_ai.GEN_AI_REQUEST_MODEL] = model
    if call.stream:
        attrs[gen_ai.GEN_AI_REQUEST_STREAM] = True
    _add_params(view.params, attrs)
    summary: ResponseSummary = summarize_response(call)
    if summary.model:
        attrs[gen_ai.GEN_AI_RESPONSE_MODEL] = metric[gen_ai.GEN_AI_RESPONSE_MODEL] = summary.model
    if summary.id:
        attrs[gen_ai.GEN_AI_RESPONSE_ID] = summary.id
    if summary.finish_reasons:
        attrs[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = summary.finish_reasons
    if call.input_tokens is not None:
        attrs[gen_ai.GEN_AI_USAGE_INPUT_TOKENS] = call.input_tokens
    if call.output_tokens is not None:
        attrs[gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS] = call.output_tokens
    if call.stream and call.ttfb_ms is not None:
        attrs[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = call.ttfb_ms / 1000.0
    return f"{operation} {model}" if model else operation


def _add_params(params: dict[str, Any], attrs: Attributes) -> None:
    for key, value in params.items():
        name = _NUMBER_PARAMS.get(key)
        if name is not None:
            if isinstance(value, int | float) and not isinstance(value, bool):
                attrs[name] = value
        elif key in ("stop", "stop_sequences"):
            stops = [value] if isinstance(value, str) else value
            if isinstance(stops, list) and stops and all(isinstance(s, str) for s in stops):
                attrs[gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES] = stops
        elif key == "n" and isinstance(value, int) and not isinstance(value, bool) and value != 1:
            attrs[gen_ai.GEN_AI_REQUEST_CHOICE_COUNT] = value


def _describe_mcp(call: Call, view: RequestView, attrs: Attributes, metric: Attributes) -> str:
    method = str(view.operation)
    name = method
    if method not in ("mcp", "response"):
        attrs[mcp.MCP_METHOD_NAME] = metric[mcp.MCP_METHOD_NAME] = method
    if view.tool_name:
        attrs[gen_ai.GEN_AI_TOOL_NAME] = metric[gen_ai.GEN_AI_TOOL_NAME] = view.tool_name
        name = f"{method} {view.tool_name}"
    if method == "tools/call":
        attrs[gen_ai.GEN_AI_OPERATION_NAME] = "execute_tool"
    request = call.request_json
    if isinstance(request, dict) and isinstance(request.get("id"), str | int) and not isinstance(request["id"], bool):
        attrs[jsonrpc.JSONRPC_REQUEST_ID] = str(request["id"])
    session = _header(call.request_headers, "mcp-session-id") or _header(call.response_headers, "mcp-session-id")
    if session:
        attrs[mcp.MCP_SESSION_ID] = session
    version = _header(call.request_headers, "mcp-protocol-version")
    if version:
        attrs[mcp.MCP_PROTOCOL_VERSION] = version
    return name


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return str(value)
    return None


def describe_attempt(call: Call, attempt: Attempt, number: int) -> tuple[str, Attributes]:
    """An upstream attempt as an HTTP client span (name and attributes)."""
    url = attempt.url.partition("?")[0]  # a query may carry a key (e.g. ?key=): never exported
    host, port = host_port(url)
    attrs: Attributes = {
        http_attributes.HTTP_REQUEST_METHOD: call.method,
        url_attributes.URL_FULL: url,
        "interlock.upstream": attempt.upstream,
        "interlock.attempt": number,
    }
    if host:
        attrs[server_attributes.SERVER_ADDRESS] = host
    if port:
        attrs[server_attributes.SERVER_PORT] = port
    if number > 1:
        attrs[http_attributes.HTTP_REQUEST_RESEND_COUNT] = number - 1
    if attempt.model:
        attrs[gen_ai.GEN_AI_REQUEST_MODEL] = attempt.model
    if attempt.backoff_ms:
        attrs["interlock.backoff_ms"] = attempt.backoff_ms
    if attempt.ttfb_ms is not None:
        attrs["interlock.ttfb_ms"] = attempt.ttfb_ms
    if attempt.status is not None:
        attrs[http_attributes.HTTP_RESPONSE_STATUS_CODE] = attempt.status
        if attempt.status >= 400:
            attrs[error_attributes.ERROR_TYPE] = str(attempt.status)
    if attempt.error:
        attrs[error_attributes.ERROR_TYPE] = attempt.error.partition(":")[0]
    return call.method, attrs


# -- content (only with otel.capture_content, read from the already-redacted bodies) -------------


def _add_content(call: Call, attrs: Attributes, limit: int) -> None:
    body = call.upstream_body if call.upstream_body is not None else call.request_body
    shadow = Call(id=call.id, route=call.route, protocol=call.protocol, method=call.method, path=call.path)
    shadow.request_body = body
    try:
        view = ADAPTERS[call.protocol].parse(shadow)
    except BadRequest:
        view = None
    if view is not None:
        system = [s for s in view.texts if s.path[:1] in (("system",), ("instructions",))]
        rest = [s for s in view.texts if s.path[:1] not in (("system",), ("instructions",))]
        if system:
            attrs[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS] = _cut(
                json.dumps([{"type": "text", "content": s.text} for s in system], ensure_ascii=False), limit
            )
        if rest:
            attrs[gen_ai.GEN_AI_INPUT_MESSAGES] = _cut(json.dumps(_messages(rest), ensure_ascii=False), limit)
    agent_body = call.agent_body()
    if agent_body and call.status is not None and call.status < 400:
        output = _output_messages(call, response_message(call, decoded_body(agent_body, call.response_headers)))
        if output:
            attrs[gen_ai.GEN_AI_OUTPUT_MESSAGES] = _cut(json.dumps(output, ensure_ascii=False), limit)


def _output_messages(call: Call, data: Any) -> list[dict[str, Any]]:
    """The model's answer as GenAI output messages: its texts, then one `tool_call` part per tool call
    (id, name, and the arguments as an object when they are JSON)."""
    if data is None:
        return []
    adapter = ADAPTERS[call.protocol]
    messages = _messages([s for s in output_texts(call.protocol, data) if s.role != "tool_args"])
    parts: list[dict[str, Any]] = []
    for tool_call in adapter.response_tool_calls(data):
        try:
            arguments: Any = json.loads(tool_call.arguments) if tool_call.arguments else {}
        except json.JSONDecodeError:
            arguments = tool_call.arguments  # as the model produced it (e.g. cut short)
        part: dict[str, Any] = {"type": "tool_call", "name": tool_call.name, "arguments": arguments}
        if tool_call.id is not None:
            part["id"] = tool_call.id
        parts.append(part)
    if parts:
        if messages and messages[-1]["role"] == "assistant":
            messages[-1]["parts"].extend(parts)
        else:
            messages.append({"role": "assistant", "parts": parts})
    return messages


def _messages(slots: list[TextSlot]) -> list[dict[str, Any]]:
    """Text slots grouped into messages (by their position in the body) with typed parts."""
    messages: list[dict[str, Any]] = []
    last_key: tuple[Any, ...] | None = None
    for slot in slots:
        key = slot.path[:2]
        role = {"tool_args": "assistant", "tool_result": "tool"}.get(slot.role, slot.role)
        if slot.role == "tool_args":
            part: dict[str, Any] = {"type": "tool_call", "arguments": slot.text}
        elif slot.role == "tool_result":
            part = {"type": "tool_call_response", "response": slot.text}
        else:
            part = {"type": "text", "content": slot.text}
        if messages and key == last_key and messages[-1]["role"] == role:
            messages[-1]["parts"].append(part)
        else:
            messages.append({"role": role, "parts": [part]})
        last_key = key
    return messages


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
