"""Protocol adapters: the only code that knows a wire format.

A new provider is one adapter file and one line in `ADAPTERS` (docs/providers.md, "Adding a provider");
config, policy cases, the proxy, recording, export, replay and the UI find it here."""

from __future__ import annotations

from interlock.proxy.protocols.anthropic import AnthropicAdapter
from interlock.proxy.protocols.azure import AzureOpenAIAdapter
from interlock.proxy.protocols.base import Adapter, BadRequest, RequestView, ResponseSummary, TextSlot, ToolCall
from interlock.proxy.protocols.bedrock import BedrockAdapter
from interlock.proxy.protocols.gemini import GeminiAdapter
from interlock.proxy.protocols.http import HttpAdapter
from interlock.proxy.protocols.mcp import McpAdapter
from interlock.proxy.protocols.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "mcp": McpAdapter(),
    "http": HttpAdapter(),
    "azure_openai": AzureOpenAIAdapter(),
    "gemini": GeminiAdapter(),
    "bedrock": BedrockAdapter(),
}


def known_protocol(name: str) -> str:
    """`name` if an adapter speaks it (for config validators), else ValueError naming the protocols."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown protocol {name!r}; use one of {', '.join(ADAPTERS)}")
    return name


__all__ = [
    "ADAPTERS",
    "Adapter",
    "BadRequest",
    "RequestView",
    "ResponseSummary",
    "TextSlot",
    "ToolCall",
    "known_protocol",
]
