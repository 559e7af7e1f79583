"""Azure OpenAI: OpenAI's bodies and streams at Azure's URLs, with Azure's keys and content filters.

Two URL families reach a resource (`https://NAME.openai.azure.com`, or an API Management gateway):
the deployment API, `/openai/deployments/{deployment}/chat/completions?api-version=...` (and
`/embeddings`, `/completions`), whose model is the deployment named in the path; and the v1 API,
`/openai/v1/chat/completions` (`/responses`, `/embeddings`), whose body's `model` names the
deployment, as OpenAI's does the model. `AzureOpenAI(azure_endpoint=...)` sends the first (and
`/openai/responses?api-version=...`), `OpenAI(base_url=".../openai/v1")` the second.

The bodies are OpenAI's, so everything that reads them is `OpenAIAdapter`'s; what is Azure's: the
key goes in `api-key` (or an Entra ID token as `Authorization: Bearer`), the model may be in the
path, and the answers carry content-filter annotations (`prompt_filter_results`, a choice's
`content_filter_results`); a stream opens with a chunk holding only the prompt's filter results,
with an empty `id`, `model` and `object` (recorded from the service: docs/providers.md, Azure).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from interlock.core.call import Call
from interlock.core.views import RequestView
from interlock.protocols.base import BadRequest, ResponseSummary
from interlock.protocols.openai import OpenAIAdapter

#: `/openai/deployments/{deployment}/...`: the deployment is one path segment.
_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)(/.*)?$")
#: Chunk fields a stream's opening filter-results chunk carries empty (they say nothing).
_EMPTY_TOP = ("id", "model", "object", "created")


def deployment_of(path: str) -> str | None:
    """The deployment a deployment-API path names, or None (the v1 API and others)."""
    match = _DEPLOYMENT.match(path)
    return match.group(1) if match else None


class AzureOpenAIAdapter(OpenAIAdapter):
    name = "azure_openai"
    title = "Azure OpenAI"
    #: `AzureOpenAI()` reads its endpoint from here; the route's URL is that endpoint.
    base_url_env = "AZURE_OPENAI_ENDPOINT"
    #: A resource key is sent as `api-key`; an Entra ID token as `Authorization: Bearer` (see `upstream_key`).
    key_header = "api-key"
    key_prefix = ""
    agent_key_headers = frozenset({"api-key", "authorization"})
    bearer_kept = True  # an agent's Entra ID token; a key (the route's, or an agent's `api-key`) is an `api-key`
    provider_name = "azure.ai.openai"
    price_provider = "azure"
    default_path = "/openai/v1/chat/completions"
    #: Not continued elsewhere (`stream_rescue` is refused at the route's line): the rescue's splice
    #: (`protocols/rescue.py`) knows OpenAI's and Anthropic's chunks, not a continuation that opens
    #: with Azure's filter-results chunk; and Azure serves OpenAI's models, which answer a trailing
    #: assistant message with a new turn (prefill `none`), so only a restart would be left.
    stream_rescue = False

    def parse(self, call: Call) -> RequestView:
        path = call.path
        if not path.startswith("/openai/"):
            # Every Azure OpenAI URL is under /openai/; anything else would be a 404 from Azure after
            # policy and guardrails ran on a body nobody reads. Say where the path went wrong instead.
            raise BadRequest(
                f"{path!r} is not an Azure OpenAI path: use /openai/deployments/{{deployment}}/... "
                "(AzureOpenAI's azure_endpoint is this route's URL) or /openai/v1/... (the v1 API's base URL)",
                "not_found",
                404,
            )
        view = super().parse(call)
        deployment = deployment_of(path)
        if deployment is not None:
            # The path decides which model answers; a `model` in the body is ignored by Azure.
            view.model = deployment
        return view

    def upstream_problem(self, url: str) -> str | None:
        # Agents' paths carry /openai/... (both SDK forms send it), so an upstream that ends in it
        # would send /openai/v1/openai/v1/...: the resource's endpoint is the upstream.
        path = urlsplit(url).path.rstrip("/")
        if path.endswith(("/openai", "/openai/v1")):
            return (
                f"an azure_openai upstream is the resource's endpoint ({url[: len(url) - len(path)]}), "
                f"without {path!r}: the agents' paths carry /openai/..."
            )
        return None

    def rewrite_model(self, data: Any, path: str, model: str) -> tuple[Any, str] | None:
        # A model alias on an Azure route names a deployment: in the path for the deployment API,
        # in the body for the v1 API (whose `model` is the deployment).
        match = _DEPLOYMENT.match(path)
        if match is None:
            return super().rewrite_model(data, path, model)
        if match.group(1) == model:
            return None
        rewritten = f"/openai/deployments/{model}{match.group(2) or ''}"
        if isinstance(data, dict) and "model" in data:
            data = {**data, "model": model}  # the SDK repeats the deployment there; keep them agreeing
        return data, rewritten

    # -- streams ------------------------------------------------------------------------------

    def reassemble(self, events: list[dict[str, Any]]) -> Any:
        # The opening chunk's empty id and model would win OpenAI's "first one seen"; its prompt
        # filter results belong at the top of the message, as the non-streamed answer has them.
        prompt_filters: list[Any] = []
        choice_filters: dict[Any, Any] = {}
        kept: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event.get("prompt_filter_results"), list):
                prompt_filters += event["prompt_filter_results"]
            for choice in event.get("choices") or []:
                if isinstance(choice, dict) and choice.get("content_filter_results"):
                    choice_filters[choice.get("index", 0)] = choice["content_filter_results"]
            if any(event.get(k) in ("", 0) for k in _EMPTY_TOP):
                event = {k: v for k, v in event.items() if not (k in _EMPTY_TOP and v in ("", 0))}
            kept.append(event)
        message = super().reassemble(kept)
        if isinstance(message, dict):
            if prompt_filters:
                message["prompt_filter_results"] = prompt_filters
            for choice in message.get("choices") or []:
                if choice.get("index") in choice_filters:
                    choice["content_filter_results"] = choice_filters[choice["index"]]
        return message

    def read_summary(self, data: Any, summary: ResponseSummary) -> None:
        if isinstance(data, dict) and data.get("id") == "" and not data.get("choices"):
            return  # the opening filter-results chunk: no id or model yet
        super().read_summary(data, summary)

    # -- policy test cases --------------------------------------------------------------------

    def sample_body(
        self, path: str, text: str, model: str | None, tools: Sequence[str], tool: tuple[str, Any] | None = None
    ) -> dict[str, Any] | None:
        deployment = deployment_of(path)
        return super().sample_body(path, text, model if deployment is None else deployment, tools, tool)
