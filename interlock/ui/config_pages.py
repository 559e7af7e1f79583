"""The web UI's pages about what is in force: the policies, the upstreams' circuit breakers, the pinned
MCP tool contracts. Every route is GET: nothing here can change a policy file."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from interlock.tracing.pins import pin_diff
from interlock.ui.policies_api import policies_snapshot
from interlock.ui.render import _no_store, _page, _runtime, _store, _token_cookie


async def policies_page(request: Request) -> Response:
    if (redirect := _token_cookie(request)) is not None:
        return redirect
    runtime = _runtime(request)
    snapshot = await policies_snapshot(runtime)
    # What each effect says (`deny: {models: [...]}`), from the rule models the engine loaded.
    details: dict[str, dict[str, Any]] = {}
    policy = getattr(runtime, "policy", None)
    for rule in policy.engine.rules if policy is not None else []:
        model = rule.rule
        details[rule.name] = {}
        for effect in model.effects:
            value: Any = getattr(model, effect, None)
            if hasattr(value, "model_dump"):
                value = value.model_dump(exclude_none=True, exclude_defaults=True)
            details[rule.name][effect] = value
    snapshot["has_counters"] = any(snapshot.get("counters", {}).values())
    return await _page(request, "policies.html", {"policy": snapshot, "details": details})


async def upstreams_page(request: Request) -> Response:
    """Both kinds of circuit breaker per route and upstream (issue 21), as `/api/upstreams` gives them."""
    if (redirect := _token_cookie(request)) is not None:
        return redirect
    forwarder = getattr(_runtime(request), "forwarder", None)
    snapshot = forwarder.snapshot() if forwarder is not None else {"routes": {}}
    return await _page(request, "upstreams.html", {"routes": snapshot["routes"]})


async def pins_page(request: Request) -> Response:
    """The pinned MCP tool contracts (docs/mcp.md), with the diff of each changed or new tool."""
    if (redirect := _token_cookie(request)) is not None:
        return redirect
    store = _store(request)
    if store is None:
        return await _no_store(request)

    rows = await run_in_threadpool(store.mcp_pins)
    for row in rows:
        row["state"] = (
            "new" if row["pinned_hash"] is None else "changed" if row["pinned_hash"] != row["seen_hash"] else "pinned"
        )
        row["diff"] = pin_diff(row) if row["state"] != "pinned" else ""
    return await _page(request, "pins.html", {"pins": rows})
