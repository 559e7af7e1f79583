"""Pinned MCP tool contracts: a tool whose definition changes after it was approved is not trusted.

The first `tools/list` answer of each MCP route pins every listed tool: its name, title,
description, input schema and annotations, with a SHA-256 hash of them (canonical JSON). A later
answer that lists a pinned tool with another definition, or a tool that was not pinned, flags it,
and `mcp_pins.on_change` decides: `monitor` records it; `hide` (the default) leaves the flagged
tools out of the list and refuses their calls; `deny` refuses the whole list (a JSON-RPC error
`tool_changed`) and the flagged tools' calls. `interlock mcp pins approve ROUTE [TOOL]` pins what
the server lists now. docs/mcp.md says the same for users.

The pins are kept in the store (`Store.mcp_pins`), read when interlock starts, before each
`tools/list` answer is judged, and every `poll_interval` seconds (in a worker thread), so an approval
by the CLI, or a change another replica or worker saw, counts here within that; a `tools/call` is
judged from memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from interlock.config import McpPins as McpPinsSettings
from interlock.core.call import Call, Decision
from interlock.core.tasks import cancel_and_wait
from interlock.protocols.mcp import McpView, is_mcp, json_rpc_error
from interlock.protocols.mcp_tools_list import ToolsListRewriter

if TYPE_CHECKING:
    from interlock.proxy.escalation import Escalator

log = logging.getLogger("interlock.mcp")

#: The error code of a refused list or call.
CHANGED_CODE = "tool_changed"
#: The parts of a tool's definition that are pinned.
CONTRACT_KEYS = ("name", "title", "description", "inputSchema", "annotations")
#: (route, tool, hash) already escalated, remembered at most (one webhook event per change).
_REPORTED_LIMIT = 4096


def tool_contract(tool: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The pinned part of a listed tool and its hash (SHA-256 of canonical JSON)."""
    contract = {key: tool[key] for key in CONTRACT_KEYS if key in tool}
    text = json.dumps(contract, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), contract


def flagged(row: dict[str, Any]) -> bool:
    """The server lists something else than what is pinned (a changed tool, or a new one)."""
    return bool(row["pinned_hash"] != row["seen_hash"])


def _changed_at(row: dict[str, Any]) -> float:
    return max(row.get("seen_at") or 0.0, row.get("pinned_at") or 0.0)


class McpPins(ToolsListRewriter):
    """Pins each MCP route's tools and judges later `tools/list` answers and `tools/call`s by them."""

    name = "mcp_pins"

    def __init__(
        self, settings: McpPinsSettings, store: Any = None, escalator: Escalator | None = None, *, poll: bool = False
    ) -> None:
        """`poll`: read the store's pins every `poll_interval` seconds once serving (the runtime's
        instance, which `aclose` stops); without it they are read before each tools/list only."""
        super().__init__()
        self.on_change = settings.on_change
        self.poll_interval = settings.poll_interval
        self._poll = poll and store is not None
        self._poller: asyncio.Task[None] | None = None
        self.store = store
        self.escalator = escalator
        #: route → tool → pin row (`tracing.pins.PIN_COLUMNS`)
        self.pins: dict[str, dict[str, dict[str, Any]]] = {}
        self._reported: set[tuple[str, str, str]] = set()
        self._writes: set[asyncio.Task[None]] = set()
        #: tools/list calls whose route's pins could not be read (the error is on the call)
        self._unread: set[str] = set()
        self.write_failures = 0
        if store is not None:
            for row in store.mcp_pins():
                self.pins.setdefault(row["route"], {})[row["tool"]] = row

    def applies(self, call: Call) -> bool:
        view = call.view
        return (
            is_mcp(call.protocol) and isinstance(view, McpView) and view.method == "tools/list" and call.reply is None
        )

    async def request(self, call: Call) -> None:
        view = call.view
        if not is_mcp(call.protocol) or not isinstance(view, McpView):
            return
        if self.applies(call):
            call.readers.append("the MCP tool pins")  # an answer that cannot be read is refused, not let through
            if self.store is not None:
                try:
                    rows = await asyncio.to_thread(self.store.mcp_pins, call.route)
                except Exception as exc:  # noqa: BLE001 - judged by the pins in memory; the gap is on record
                    if call.route in self.pins:
                        reason = f"the pins could not be read from the store ({exc}): judged by those in memory"
                    else:  # not known whether the route was pinned: never pin it from this answer
                        reason = f"the pins could not be read from the store ({exc}): this list is not judged"
                        self._unread.add(call.id)
                    call.decide(Decision("mcp_pins", "error", None, reason))
                    log.warning("call %s: %s", call.id, reason)
                    return
                self.pins[call.route] = {row["tool"]: row for row in rows} or self.pins.get(call.route, {})
            return
        if view.method != "tools/call" or not view.tool_name or self.on_change == "monitor":
            return
        row = self.pins.get(call.route, {}).get(view.tool_name)
        if row is None or not flagged(row):
            return
        what = "changed since it was pinned" if row["pinned_hash"] is not None else "not pinned (new since the pin)"
        message = (
            f"MCP tool {view.tool_name!r} of route {call.route!r} is {what}; "
            f"`interlock mcp pins approve {call.route} {view.tool_name}` accepts it"
        )
        call.decide(Decision("mcp_pins", "deny", None, message, {"tool": view.tool_name}))
        reply = self.adapter.error_reply(403, CHANGED_CODE, message, retryable=False)
        call.answer(reply, "denied", CHANGED_CODE, message)

    def filter(self, call: Call, message: dict[str, Any]) -> bool:
        if call.id in self._unread:
            return False
        result = message.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            return False
        route = call.route
        pins = self.pins.setdefault(route, {})
        first = not pins
        now = time.time()
        dirty: list[dict[str, Any]] = []
        changed: list[str] = []
        new: list[str] = []
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                continue
            name = tool["name"]
            digest, contract = tool_contract(tool)
            row = pins.get(name)
            if row is None:
                pinned = (digest, contract, now) if first else (None, None, None)
                row = pins[name] = dict(zip(("pinned_hash", "pinned", "pinned_at"), pinned, strict=True))
                row.update(route=route, tool=name, seen_hash="", seen=None, seen_at=now)
            if row["seen_hash"] != digest:
                row.update(seen_hash=digest, seen=contract, seen_at=now)
                dirty.append(dict(row))
            if flagged(row):
                (changed if row["pinned_hash"] is not None else new).append(name)
        self._save(dirty)
        if first:
            call.decide(Decision("mcp_pins", "allow", None, f"pinned {len(pins)} tools: the route's first tools/list"))
        if not changed and not new:
            return False
        parts = []
        if changed:
            parts.append(f"changed since pinned: {', '.join(changed)}")
        if new:
            parts.append(f"not pinned: {', '.join(new)}")
        reason = f"MCP tools of route {route!r} " + "; ".join(parts)
        detail = {"changed": changed, "new": new, "on_change": self.on_change}
        call.meta["mcp_pins"] = detail
        self._escalate(call, changed + new)
        if self.on_change == "monitor":
            call.decide(Decision("mcp_pins", "monitor", None, reason, detail))
            return False
        if self.on_change == "hide":
            self.adapter.remove_tools(message, set(changed + new))
            call.decide(Decision("mcp_pins", "modify", None, f"{reason}: left out of the list", detail))
            return True
        text = f"{reason}; `interlock mcp pins diff {route}` shows the change, `approve` accepts it"
        call.decide(Decision("mcp_pins", "deny", None, text, detail))
        error = json.loads(json_rpc_error(message.get("id"), CHANGED_CODE, text))["error"]
        message.pop("result", None)
        message["error"] = error
        call.outcome, call.error_code, call.error = "blocked", CHANGED_CODE, text
        return True

    def approve(self, route: str, tool: str | None = None) -> list[str]:
        """Pin what the route's server lists now (the flagged tools, or one); in the store too."""
        approved = self.store.approve_mcp_pins(route, tool) if self.store is not None else []
        for name, row in self.pins.get(route, {}).items():
            if flagged(row) and (tool is None or name == tool):
                row.update(pinned_hash=row["seen_hash"], pinned=row["seen"], pinned_at=time.time())
                if name not in approved:
                    approved.append(name)
        return sorted(approved)

    def _save(self, rows: list[dict[str, Any]]) -> None:
        if not rows or self.store is None:
            return

        async def write() -> None:
            try:
                await asyncio.to_thread(self.store.save_mcp_pins, rows)
            except Exception as exc:  # noqa: BLE001 - the pins hold in memory; the loss is counted and logged
                self.write_failures += 1
                log.warning("MCP tool pins of route %s not saved to the store: %s", rows[0]["route"], exc)

        task = asyncio.get_running_loop().create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _escalate(self, call: Call, tools: list[str]) -> None:
        pins = self.pins[call.route]
        for name in tools:
            key = (call.route, name, pins[name]["seen_hash"])
            if key in self._reported:
                continue
            if len(self._reported) >= _REPORTED_LIMIT:
                self._reported.clear()
            self._reported.add(key)
            kind = "changed" if pins[name]["pinned_hash"] is not None else "new"
            log.warning(
                "MCP tool %r of route %s is %s since it was pinned (%s)", name, call.route, kind, self.on_change
            )
            if self.escalator is not None and self.escalator.enabled:
                self.escalator.emit(
                    "mcp_tool_changed", route=call.route, tool=name, change=kind, action=self.on_change, call_id=call.id
                )

    async def seal(self, call: Call) -> None:
        await super().seal(call)
        self._unread.discard(call.id)

    async def start(self) -> None:
        """Start polling the store (with `poll`; the runtime calls this once serving)."""
        if self._poll and self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._watch(), name="interlock-mcp-pins")

    async def _watch(self) -> None:
        """Merge the store's pins into memory every `poll_interval` seconds: per tool, the row last
        changed wins (an approval moves `pinned_at`, a new listing `seen_at`), so a write of this
        interlock still in flight is not undone by an older row."""
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                rows = await asyncio.to_thread(self.store.mcp_pins)
            except Exception as exc:  # noqa: BLE001 - the next poll tries again; tools/list reads it too
                log.warning("MCP tool pins not read from the store: %s", exc)
                continue
            for row in rows:
                pins = self.pins.setdefault(row["route"], {})
                mine = pins.get(row["tool"])
                if mine is None or _changed_at(row) > _changed_at(mine):
                    pins[row["tool"]] = row

    async def aclose(self) -> None:
        """Stop polling; wait for the pin writes in flight."""
        await cancel_and_wait(self._poller)
        self._poller = None
        await self.aflush()

    async def aflush(self) -> None:
        """Wait for the pin writes in flight (tests, shutdown)."""
        while self._writes:
            await asyncio.gather(*list(self._writes))


__all__ = ["CHANGED_CODE", "McpPins", "flagged", "tool_contract"]
