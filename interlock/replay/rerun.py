"""`interlock replay run`: re-send recorded requests to a live upstream and compare the answers.

For trying another model or provider on real traffic before switching: each recorded request of a
route is sent again (optionally with another `model`), and the report puts the two answers side by
side: text diff, tool calls made, finish reasons, tokens and latency. Streams are re-sent as streams
and read through the adapters (reassembled into the message a non-streamed call would return).
"""

from __future__ import annotations

import asyncio
import difflib
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import httpx

from interlock.config import SourceError, load_settings
from interlock.core.call import SECRET_HEADERS, Call, Chunk, new_id
from interlock.protocols import ADAPTERS, Adapter
from interlock.protocols.base import dump_body
from interlock.protocols.summary import summarize_response
from interlock.proxy.relay_rules import HOP_BY_HOP
from interlock.proxy.upstream import INTERLOCK_HEADERS
from interlock.replay.bundle import Bundle


class RerunError(Exception):
    """The re-run cannot start (no target for the route, bad URL)."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str  # the upstream base URL; the recorded path is appended
    protocol: str
    api_key: str | None = None


def target_for(route: str, bundle: Bundle, *, upstream: str | None, api_key: str | None, config: str | None) -> Target:
    protocol = bundle.routes.get(route)
    if protocol is None:
        raise RerunError(f"the bundle has no route {route!r}; it has {', '.join(bundle.routes) or 'none'}")
    if upstream:
        if not upstream.startswith(("http://", "https://")):
            raise RerunError(f"--upstream {upstream!r} must start with http:// or https://")
        return Target(upstream.rstrip("/"), protocol, api_key)

    try:
        settings = load_settings(config)
    except SourceError as exc:
        raise RerunError(str(exc)) from None
    configured = settings.routes.get(route)
    if configured is None:
        raise RerunError(f"no route {route!r} in {settings.source}; give --upstream URL or a --config that has it")
    first = configured.upstreams[0]
    return Target(first.url, protocol, api_key or first.api_key)


@dataclass(slots=True)
class Output:
    """What one answer said, read through the protocol adapter."""

    status: int | None
    text: str = ""
    tool_calls: list[str] = field(default_factory=list)  # "name(arguments)"
    finish_reasons: list[str] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    model: str | None = None
    error: str | None = None


def output_of(call: Call) -> Output:
    adapter = ADAPTERS[call.protocol]
    out = Output(call.status, latency_ms=call.duration_ms, ttfb_ms=call.ttfb_ms, error=call.error)
    # A stream is compared as the agent received it (its restored chunks, when a stage changed them).
    received = call if not call.stream or call.agent_chunks is None else replace(call, chunks=call.agent_chunks)
    view = adapter.response_view(received)
    message = view.message
    if isinstance(message, dict):
        out.text = "".join(s.text for s in view.texts if s.role == "assistant")
        out.tool_calls = [f"{t.name}({t.arguments})" for t in view.tool_calls]
        if out.error is None and isinstance(message.get("error"), dict):
            out.error = str(message["error"].get("message") or message["error"])
    out.input_tokens, out.output_tokens = adapter.usage(call)
    try:
        summary = summarize_response(call)
        out.finish_reasons = list(summary.finish_reasons)
        out.model = summary.model
    except Exception:  # noqa: BLE001 - a response we cannot summarise still gets compared
        pass
    return out


@dataclass(slots=True)
class Comparison:
    step: int
    call_id: str
    method: str
    path: str
    model: str | None
    recorded: Output
    rerun: Output

    @property
    def same_text(self) -> bool:
        return self.recorded.text == self.rerun.text

    @property
    def same_tool_calls(self) -> bool:
        return [t.split("(")[0] for t in self.recorded.tool_calls] == [t.split("(")[0] for t in self.rerun.tool_calls]

    @property
    def same_finish(self) -> bool:
        return self.recorded.finish_reasons == self.rerun.finish_reasons

    def text_diff(self) -> list[str]:
        return list(
            difflib.unified_diff(
                self.recorded.text.splitlines(), self.rerun.text.splitlines(), "recorded", "re-run", lineterm="", n=2
            )
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "call_id": self.call_id,
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "recorded": asdict(self.recorded),
            "rerun": asdict(self.rerun),
            "same_text": self.same_text,
            "same_tool_calls": self.same_tool_calls,
            "same_finish_reasons": self.same_finish,
            "text_diff": self.text_diff(),
        }


@dataclass(slots=True)
class Report:
    target: Target
    model: str | None
    comparisons: list[Comparison]

    def totals(self) -> dict[str, Any]:
        items = self.comparisons

        def total(values: list[int | None]) -> int | None:
            known = [v for v in values if v is not None]
            return sum(known) if known else None

        def median(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return round(statistics.median(known), 1) if known else None

        return {
            "calls": len(items),
            "same_text": sum(c.same_text for c in items),
            "same_tool_calls": sum(c.same_tool_calls for c in items),
            "same_finish_reasons": sum(c.same_finish for c in items),
            "errors": sum(1 for c in items if c.rerun.error or (c.rerun.status or 0) >= 400),
            "recorded": {
                "input_tokens": total([c.recorded.input_tokens for c in items]),
                "output_tokens": total([c.recorded.output_tokens for c in items]),
                "latency_ms_p50": median([c.recorded.latency_ms for c in items]),
            },
            "rerun": {
                "input_tokens": total([c.rerun.input_tokens for c in items]),
                "output_tokens": total([c.rerun.output_tokens for c in items]),
                "latency_ms_p50": median([c.rerun.latency_ms for c in items]),
            },
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "target": asdict(self.target) | {"api_key": None},
            "model": self.model,
            "totals": self.totals(),
            "calls": [c.to_json() for c in self.comparisons],
        }

    def markdown(self, bundle: str) -> str:
        totals = self.totals()
        n = totals["calls"]
        lines = [
            f"# Re-run of `{bundle}`",
            "",
            f"Target: `{self.target.url}` ({self.target.protocol})" + (f", model `{self.model}`" if self.model else ""),
            "",
            "| | recorded | re-run |",
            "|---|---|---|",
            f"| calls | {n} | {n} ({totals['errors']} errors) |",
            f"| same text | | {totals['same_text']} of {n} |",
            f"| same tool calls | | {totals['same_tool_calls']} of {n} |",
            f"| same finish reasons | | {totals['same_finish_reasons']} of {n} |",
            f"| input tokens | {_num(totals['recorded']['input_tokens'])} | {_num(totals['rerun']['input_tokens'])} |",
            f"| output tokens | {_num(totals['recorded']['output_tokens'])} | {_num(totals['rerun']['output_tokens'])} |",
            f"| latency p50 (ms) | {_num(totals['recorded']['latency_ms_p50'])} | {_num(totals['rerun']['latency_ms_p50'])} |",
            "",
        ]
        for c in self.comparisons:
            verdict = "same answer" if c.same_text and c.same_tool_calls and c.same_finish else "differs"
            lines += [f"## Step {c.step}: {c.method} {c.path} ({c.model or 'no model'}) — {verdict}", ""]
            lines.append(
                f"- status: {c.recorded.status} → {c.rerun.status}" + (f" ({c.rerun.error})" if c.rerun.error else "")
            )
            lines.append(f"- finish reasons: {_list(c.recorded.finish_reasons)} → {_list(c.rerun.finish_reasons)}")
            lines.append(f"- tool calls: {_list(c.recorded.tool_calls)} → {_list(c.rerun.tool_calls)}")
            lines.append(
                f"- tokens in/out: {_num(c.recorded.input_tokens)}/{_num(c.recorded.output_tokens)} → "
                f"{_num(c.rerun.input_tokens)}/{_num(c.rerun.output_tokens)}"
            )
            lines.append(f"- latency (ms): {_num(c.recorded.latency_ms)} → {_num(c.rerun.latency_ms)}")
            diff = c.text_diff()
            if diff:
                lines += ["", "```diff", *diff, "```"]
            lines.append("")
        return "\n".join(lines)


def _num(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"


def _list(values: Sequence[str]) -> str:
    return ", ".join(f"`{v}`" for v in values) if values else "none"


_SKIP_HEADERS = HOP_BY_HOP | INTERLOCK_HEADERS | SECRET_HEADERS | {"host", "content-length", "accept-encoding"}


async def rerun(
    calls: Sequence[Call],
    target: Target,
    *,
    model: str | None = None,
    concurrency: int = 4,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Report:
    """Re-send every call (in recording order, `concurrency` at a time) and compare."""
    adapter = ADAPTERS[target.protocol]
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(600, connect=10), trust_env=False
    ) as client:

        async def one(step: int, call: Call) -> Comparison:
            async with semaphore:
                fresh = await _send(client, call, target, adapter, model)
            shown = model or call.model or _requested_model(call)
            return Comparison(step, call.id, call.method, call.path, shown, output_of(call), output_of(fresh))

        replayable = [c for c in calls if c.status is not None]
        comparisons = await asyncio.gather(*(one(i, c) for i, c in enumerate(replayable, 1)))
    return Report(target, model, list(comparisons))


def _requested_model(call: Call) -> str | None:
    try:
        data = json.loads(call.request_body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


async def _send(client: httpx.AsyncClient, call: Call, target: Target, adapter: Adapter, model: str | None) -> Call:
    body, path = call.request_body, call.path
    if model is not None and body:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError):  # ValueError: JSON's, and a number past the int limit
            data = None
        rewritten = adapter.rewrite_model(data, path, model)  # in the body, or the URL's path
        if rewritten is not None:
            data, path = rewritten
            body = dump_body(data)
    headers = [(k, v) for k, v in call.request_headers if k.lower() not in _SKIP_HEADERS]
    headers.append(("accept-encoding", "identity"))
    if target.api_key:
        headers.append(adapter.upstream_key(target.api_key))
    fresh = Call(id=new_id(), route=call.route, protocol=call.protocol, method=call.method, path=call.path)
    fresh.stream = call.stream
    fresh.model = model or call.model
    url = target.url + path + (f"?{call.query}" if call.query else "")
    started = time.perf_counter()
    try:
        async with client.stream(call.method, url, headers=headers, content=body) as response:
            fresh.status = response.status_code
            fresh.response_headers = [
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers.raw
            ]
            streamed = response.headers.get("content-type", "").startswith("text/event-stream")
            parts: list[bytes] = []
            async for data in response.aiter_raw():
                t = (time.perf_counter() - started) * 1000
                if fresh.ttfb_ms is None:
                    fresh.ttfb_ms = t
                if streamed:
                    fresh.chunks.append(Chunk(t, data))
                else:
                    parts.append(data)
            fresh.stream = streamed
            fresh.response_body = None if streamed else b"".join(parts)
    except httpx.HTTPError as exc:
        fresh.error = f"{type(exc).__name__}: {exc}"
    fresh.duration_ms = (time.perf_counter() - started) * 1000
    return fresh
