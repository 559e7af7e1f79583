"""Protocol adapters: the only code that knows a wire format."""

from __future__ import annotations

from interlock.proxy.protocols.anthropic import AnthropicAdapter
from interlock.proxy.protocols.base import Adapter, BadRequest, RequestView, TextSlot, ToolCall
from interlock.proxy.protocols.http import HttpAdapter
from interlock.proxy.protocols.mcp import McpAdapter
from interlock.proxy.protocols.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "mcp": McpAdapter(),
    "http": HttpAdapter(),
}

__all__ = ["ADAPTERS", "Adapter", "BadRequest", "RequestView", "TextSlot", "ToolCall"]
