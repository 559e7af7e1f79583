"""Azure OpenAI's differences from OpenAI's wire format, for the scripted provider: a registered
format (`wire.py`) that answers `/openai/...` paths as OpenAI does, with Azure's dialect.

Taken from Microsoft's REST reference (Azure OpenAI "Data plane inference": the deployment and v1
paths, `api-key` / Entra ID bearer auth, content filtering annotations) and a recorded gpt-4o
stream (github.com/dto-btn/ssc-assistant, `mergeOpenAiDelta/testHelpers/simple_chat.ts`): a stream
opens with a chunk holding only `prompt_filter_results` (empty `id`, `model`, `object`, `created`
0); every text chunk's choice carries `content_filter_results` (the role and finish chunks an empty
one); the non-streamed answer has `prompt_filter_results` at the top and each choice its
`content_filter_results`. Errors are `{"error": {"code", "message"}}`, the code often the status as
a string ("401", "404", "429"); a prompt the filter blocks is a 400 `content_filter` with an
`innererror`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from interlock.scripted.replies import Script
from interlock.scripted.wire import Exchange, OpenAIDialect, ScriptedFormat, register, send_json

_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)/")
_SAFE = {"filtered": False, "severity": "safe"}
#: The four default categories Azure's filter annotates, each "safe" in scripted answers.
FILTERS: dict[str, Any] = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTERS = [{"prompt_index": 0, "content_filter_results": FILTERS}]


def is_azure(path: str) -> bool:
    """An Azure OpenAI path: every one is under /openai/ (the deployment and v1 APIs)."""
    return path.startswith("/openai/")


def deployment(path: str) -> str | None:
    match = _DEPLOYMENT.match(path)
    return match.group(1) if match else None


def refusal(path: str, query: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
    """Azure's answer to a request it refuses before any model runs: no credential (401), or a
    deployment-API path without `api-version` (404, as the service answers it)."""
    if not headers.get("api-key") and not headers.get("authorization", "").lower().startswith("bearer "):
        message = (
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
            "key for an active subscription and use a correct regional API endpoint for your resource."
        )
        return 401, error(401, message)
    if deployment(path) is not None and "api-version=" not in query:
        return 404, error(404, "Resource not found")
    return None


def error(status: int, message: str) -> bytes:
    return json.dumps({"error": {"code": str(status), "message": message}}).encode()


def content_filter_error() -> bytes:
    """A prompt the content filter blocks (a 400): `Script(error="content_filter")` on an Azure path."""
    filters = {**FILTERS, "violence": {"filtered": True, "severity": "medium"}}
    return json.dumps(
        {
            "error": {
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                "management policy. Please modify your prompt and retry.",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": filters},
            }
        }
    ).encode()


def chat(events: list[bytes], whole: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
    """OpenAI's chat completion (streamed events and whole answer) as Azure sends it."""
    whole = {k: v for k, v in whole.items() if k != "service_tier"}  # Azure's answers carry none
    whole["prompt_filter_results"] = PROMPT_FILTERS
    whole["choices"] = [{**c, "content_filter_results": FILTERS} for c in whole["choices"]]
    opening = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": PROMPT_FILTERS,
    }
    out = [b"data: " + json.dumps(opening).encode() + b"\n\n"]
    for event in events:
        if not event.startswith(b"data: {"):
            out.append(event)  # [DONE], keep-alive comments
            continue
        chunk = json.loads(event[6:])
        chunk.pop("service_tier", None)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            texts = any(isinstance(delta.get(k), str) and delta[k] for k in ("content", "refusal"))
            choice["content_filter_results"] = FILTERS if texts else {}
        out.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    return out, whole


def _error(script: Script) -> bytes | None:
    """Azure's error body for a scripted error (None: a named OpenAI error, answered as OpenAI does)."""
    if script.error == "content_filter":
        return content_filter_error()
    if script.error is None:
        return error(script.status, f"scripted error {script.status}")
    return None


DIALECT = OpenAIDialect(error=_error, chat=chat)


async def answer(exchange: Exchange) -> None:
    received = exchange.received
    refused = refusal(received.path, received.query, received.headers)
    if refused is not None:
        await send_json(exchange.send, refused[0], refused[1], [])
        return
    # The deployment API names the model in the path (`set_model` takes the deployment).
    exchange.data.setdefault("model", deployment(received.path))
    await exchange.upstream.answer_openai(exchange, DIALECT)


register(ScriptedFormat("azure", is_azure, answer))
