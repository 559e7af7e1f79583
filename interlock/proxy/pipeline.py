"""The built-in stages, in order. `default_stages` lists the ones every call passes; the stages that
need services (policy → guardrails → MCP record → recorder → exporter) come after them, in the order
`interlock.server.Runtime.extra_stages` gives. Together:

request:  identify → parse → mcp session → policy → guardrails   (then route/retry/send)
response: usage → guardrails (output, tool-call policy)    (then the agent gets it)
done:     record → export
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from interlock.config import Settings
from interlock.proxy.hooks import HOOKS
from interlock.proxy.identify import Identify
from interlock.proxy.mcp import McpSession
from interlock.proxy.parse import Parse, Usage
from interlock.tracing.call import Call


def default_stages(settings: Settings, extra: Sequence[object] = ()) -> list[object]:
    """The stages every call passes through, in order; `extra` (recorder, exporter...) go last."""
    stages: list[object] = [Identify(settings), Parse(), Usage()]
    if any(route.protocol == "mcp" for route in settings.routes.values()):
        stages.insert(2, McpSession())  # only with MCP routes: the plain path stays free of it
    stages.extend(extra)
    return stages


Hook = Callable[..., Awaitable[Any]]


def _as_async(method: Callable[..., Any]) -> Hook:
    if inspect.iscoroutinefunction(method):
        return method

    async def call(*args: Any) -> Any:
        return method(*args)

    return call


class Pipeline:
    """The stages' hooks, resolved once into per-event lists so the hot path only loops."""

    def __init__(self, stages: Sequence[object]) -> None:
        self.stages = list(stages)
        self.hooks: dict[str, list[Hook]] = {name: [] for name in HOOKS}
        for stage in self.stages:
            for name in HOOKS:
                method = getattr(stage, name, None)
                if method is not None:
                    self.hooks[name].append(_as_async(method))
        self.has_chunk_hooks = bool(self.hooks["chunk"])

    async def request(self, call: Call) -> None:
        for hook in self.hooks["request"]:
            await hook(call)
            if call.reply is not None:
                return

    async def response_head(self, call: Call) -> None:
        for hook in self.hooks["response_head"]:
            await hook(call)

    async def chunk(self, call: Call, data: bytes, last: bool) -> bytes:
        for hook in self.hooks["chunk"]:
            data = await hook(call, data, last)
        return data

    async def response(self, call: Call) -> None:
        for hook in self.hooks["response"]:
            await hook(call)

    async def error(self, call: Call, exc: BaseException) -> None:
        for hook in self.hooks["error"]:
            await hook(call, exc)

    async def done(self, call: Call) -> None:
        for hook in self.hooks["done"]:
            await hook(call)
