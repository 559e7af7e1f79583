"""What the scripted provider answers in the OpenAI wire formats (chat completions, Responses,
embeddings), whole and as SSE events, built from a `Script`."""

from __future__ import annotations

import json
from typing import Any

from interlock.scripted.replies import Script, pieces, signature, sse


def _token(text: str) -> dict[str, Any]:
    return {"token": text, "logprob": -0.125, "bytes": list(text.encode()), "top_logprobs": []}


# OpenAI chat completions. The chunks follow the API reference ("The chat completion chunk object")
# and real recordings: the first delta carries the role with `content: ""` (`content: null` and the
# first tool call's id and name when the model calls tools), then content / refusal / argument
# pieces, a last choice chunk with an empty delta and the finish reason, and with
# `stream_options.include_usage` a usage chunk with `choices: []` (every earlier chunk has
# `usage: null`), then `data: [DONE]`.
def chat_reply(text: str, script: Script, model: str, data: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
    created = 1_700_000_000
    rid = script.message_id or "chatcmpl-scripted"
    usage = {
        "prompt_tokens": script.input_tokens,
        "completion_tokens": script.output_tokens,
        "total_tokens": script.input_tokens + script.output_tokens,
        "prompt_tokens_details": {"cached_tokens": script.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": script.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    tool_calls: list[dict[str, Any]] = [
        {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": json.dumps(t.arguments)}}
        for t in script.tool_calls
    ]
    refusal = script.refusal if not tool_calls else None
    answer = None if tool_calls or refusal is not None else text
    finish = "tool_calls" if tool_calls else "stop"
    message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": refusal}
    if tool_calls:
        message["tool_calls"] = tool_calls
    want_logprobs = data.get("logprobs") is True
    text_pieces = pieces(answer or "", script.chunk_size) if answer is not None else []
    refusal_pieces = pieces(refusal, script.chunk_size) if refusal is not None else []
    logprobs = None
    if want_logprobs and not tool_calls:
        logprobs = {
            "content": [_token(p) for p in text_pieces] if answer is not None else None,
            "refusal": [_token(p) for p in refusal_pieces] if refusal is not None else None,
        }
    top = {
        "id": rid,
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_scripted",
    }
    whole = {
        **top,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}],
        "usage": usage,
    }
    with_usage = (data.get("stream_options") or {}).get("include_usage") is True

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, lp: Any = None) -> bytes:
        body: dict[str, Any] = {
            **top,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish_reason}],
        }
        if with_usage:
            body["usage"] = None
        return sse(body)

    events: list[bytes] = []
    if tool_calls:
        for i, call in enumerate(tool_calls):
            head = {"index": i, "id": call["id"], "type": "function"}
            head["function"] = {"name": call["function"]["name"], "arguments": ""}
            first: dict[str, Any] = {"tool_calls": [head]}
            if i == 0:
                first = {"role": "assistant", "content": None, "refusal": None, **first}
            events.append(chunk(first))
            for piece in pieces(call["function"]["arguments"], 8):
                events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    elif refusal is not None:
        events.append(chunk({"role": "assistant", "content": None, "refusal": ""}))
        for piece in refusal_pieces:
            lp = {"content": None, "refusal": [_token(piece)]} if want_logprobs else None
            events.append(chunk({"refusal": piece}, lp=lp))
    else:
        first_lp: dict[str, Any] | None = {"content": [], "refusal": None} if want_logprobs else None
        events.append(chunk({"role": "assistant", "content": "", "refusal": None}, lp=first_lp))
        for piece in text_pieces:
            lp = {"content": [_token(piece)], "refusal": None} if want_logprobs else None
            events.append(chunk({"content": piece}, lp=lp))
    events.append(chunk({}, finish))
    if with_usage:
        events.append(sse({**top, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return events, whole


def _echo_tools(tools: Any) -> list[dict[str, Any]]:
    """The request's function tools as the Responses API echoes them in the response."""
    echoed = []
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str):
            echoed.append(
                {
                    "type": "function",
                    "name": tool["name"],
                    "description": tool.get("description"),
                    "parameters": tool.get("parameters") or {},
                    "strict": tool.get("strict", True),
                }
            )
    return echoed


class _Events:
    """Responses stream events, each with its `event:` line and the next `sequence_number`."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def __call__(self, kind: str, **fields: Any) -> None:
        self.out.append(sse({"type": kind, "sequence_number": len(self.out), **fields}, kind))


# OpenAI Responses. The events follow the API reference ("Streaming events") and real recordings
# (e.g. pydantic-ai's cassettes of the live API, test_openai_responses_model_web_search_tool_stream
# and ..._thinking_part): response.created, response.in_progress, then per output item
# response.output_item.added, its content (message: response.content_part.added,
# response.output_text.delta..., response.output_text.done, response.content_part.done; refusal:
# response.refusal.delta/.done; function_call: response.function_call_arguments.delta/.done;
# reasoning: response.reasoning_summary_part.added, response.reasoning_summary_text.delta/.done,
# response.reasoning_summary_part.done), response.output_item.done, and response.completed with the
# whole response. Every event has a sequence_number; a structured-output request's `text.format`
# (json_schema) is echoed in the response's `text`, the answer being the script's (JSON) text.
def responses_reply(
    text: str, script: Script, model: str, data: dict[str, Any] | None = None
) -> tuple[list[bytes], dict[str, Any]]:
    data = data or {}
    rid = script.message_id or "resp_scripted"
    usage = {
        "input_tokens": script.input_tokens,
        "input_tokens_details": {
            "cached_tokens": script.cached_tokens,
            "cache_write_tokens": script.cache_write_tokens,
        },
        "output_tokens": script.output_tokens,
        "output_tokens_details": {"reasoning_tokens": script.reasoning_tokens},
        "total_tokens": script.input_tokens + script.output_tokens,
    }
    output: list[dict[str, Any]] = []
    if script.thinking is not None:
        reasoning: dict[str, Any] = {
            "id": "rs_scripted",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": script.thinking}],
        }
        if "reasoning.encrypted_content" in (data.get("include") or []):
            reasoning["encrypted_content"] = signature(script.thinking)
        output.append(reasoning)
    if script.tool_calls:
        output += [
            {
                "id": f"fc_{t.id}",
                "type": "function_call",
                "status": "completed",
                "arguments": json.dumps(t.arguments),
                "call_id": t.id,
                "name": t.name,
            }
            for t in script.tool_calls
        ]
    else:
        part = (
            {"type": "refusal", "refusal": script.refusal}
            if script.refusal is not None
            else {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        )
        output.append(
            {"id": "msg_scripted", "type": "message", "status": "completed", "content": [part], "role": "assistant"}
        )
    base = {
        "id": rid,
        "object": "response",
        "created_at": 1_700_000_000,
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": data.get("instructions"),
        "max_output_tokens": data.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": data.get("parallel_tool_calls", True),
        "previous_response_id": data.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": data.get("store", True),
        "temperature": 1.0,
        "text": data.get("text") or {"format": {"type": "text"}},
        "tool_choice": data.get("tool_choice") or "auto",
        "tools": _echo_tools(data.get("tools")),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }
    in_progress = {**base, "status": "in_progress", "output": [], "usage": None}
    ev = _Events()
    ev("response.created", response=in_progress)
    ev("response.in_progress", response=in_progress)
    for index, item in enumerate(output):
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "reasoning":
            ev("response.output_item.added", output_index=index, item={**item, "summary": []})
            summary = item["summary"][0]
            ev("response.reasoning_summary_part.added", **at, summary_index=0, part={**summary, "text": ""})
            for piece in pieces(summary["text"], script.chunk_size):
                ev("response.reasoning_summary_text.delta", **at, summary_index=0, delta=piece)
            ev("response.reasoning_summary_text.done", **at, summary_index=0, text=summary["text"])
            ev("response.reasoning_summary_part.done", **at, summary_index=0, part=summary)
        elif item["type"] == "function_call":
            ev(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in pieces(item["arguments"], 8):
                ev("response.function_call_arguments.delta", **at, delta=piece)
            ev("response.function_call_arguments.done", **at, name=item["name"], arguments=item["arguments"])
        else:
            ev("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
            part = item["content"][0]
            at = {**at, "content_index": 0}
            if part["type"] == "refusal":
                ev("response.content_part.added", **at, part={**part, "refusal": ""})
                for piece in pieces(part["refusal"], script.chunk_size):
                    ev("response.refusal.delta", **at, delta=piece)
                ev("response.refusal.done", **at, refusal=part["refusal"])
            else:
                ev("response.content_part.added", **at, part={**part, "text": ""})
                for piece in pieces(part["text"], script.chunk_size):
                    ev("response.output_text.delta", **at, delta=piece, logprobs=[])
                ev("response.output_text.done", **at, text=part["text"], logprobs=[])
            ev("response.content_part.done", **at, part=part)
        ev("response.output_item.done", output_index=index, item=item)
    ev("response.completed", response=base)
    return ev.out, base


def embeddings_reply(data: dict[str, Any], model: str) -> dict[str, Any]:
    items = data.get("input")
    count = len(items) if isinstance(items, list) else 1
    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)],
        "usage": {"prompt_tokens": 3 * count, "total_tokens": 3 * count},
    }
