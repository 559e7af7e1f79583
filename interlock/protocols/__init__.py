"""Protocol adapters: the only code that knows a wire format.

A new provider is one adapter file and one line in `ADAPTERS` (docs/providers.md, "Adding a provider");
config, policy cases, the proxy, recording, export, replay and the UI find it here."""

from __future__ import annotations

from interlock.protocols.anthropic import AnthropicAdapter
from interlock.protocols.azure import AzureOpenAIAdapter
from interlock.protocols.base import Adapter, BadRequest, ResponseSummary
from interlock.protocols.bedrock import BedrockAdapter
from interlock.protocols.gemini import GeminiAdapter
from interlock.protocols.http import HttpAdapter
from interlock.protocols.mcp import McpAdapter
from interlock.protocols.ollama import OllamaAdapter
from interlock.protocols.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "mcp": McpAdapter(),
    "http": HttpAdapter(),
    "azure_openai": AzureOpenAIAdapter(),
    "gemini": GeminiAdapter(),
    "bedrock": BedrockAdapter(),
    "ollama": OllamaAdapter(),
}


def recorded_adapter(protocol: str) -> Adapter:
    """The adapter that reads a recorded call of `protocol`: plain HTTP's for a protocol this
    interlock does not speak (a recording from a newer one), so it still shows, as bytes."""
    return ADAPTERS.get(protocol, ADAPTERS["http"])


def known_protocol(name: str) -> str:
    """`name` if an adapter speaks it (for config validators), else ValueError naming the protocols."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown protocol {name!r}; use one of {', '.join(ADAPTERS)}")
    return name


__all__ = [
    "ADAPTERS",
    "Adapter",
    "BadRequest",
    "ResponseSummary",
    "known_protocol",
    "recorded_adapter",
]
