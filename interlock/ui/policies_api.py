"""`GET /api/policies`: the rules in force, how often each fired, the last reload and its errors; and
the run caps a session has consumed (its page and `GET /api/sessions/{id}`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from interlock.core.state import StateUnavailable

if TYPE_CHECKING:
    from interlock.ui.state import AdminState


async def policies_snapshot(runtime: AdminState) -> dict[str, Any]:
    policy = getattr(runtime, "policy", None)
    if policy is None:
        return {"enabled": False, "rules": [], "errors": [], "files": [], "loaded_at": None, "reloads": 0}
    rules = []
    for rule in policy.engine.rules:
        model = rule.rule
        rules.append(
            {
                "name": rule.name,
                "where": rule.where,
                "description": model.description,
                "mode": model.mode,
                "effects": model.effects,
                "match": model.match.model_dump(exclude_none=True),
                "when": model.when,
                "fired": policy.fired.get(rule.name, 0),
            }
        )
    limiter = runtime.policy_limiter
    return {
        "enabled": True,
        "paths": list(policy.paths),
        "files": policy.files,
        "loaded_at": policy.loaded_at,
        "reloads": policy.reloads,
        "errors": policy.errors,
        "rules": rules,
        "counters": await limiter.snapshot(time.time()) if limiter is not None else {},
    }


async def session_caps(runtime: AdminState, session: str, summary: dict[str, Any]) -> dict[str, Any]:
    """`{"caps": [...]}`: each run cap that applies to the session (`Limiter.session_caps`), or, when the
    counters cannot be read, `{"caps": [], "caps_unavailable": why}` (the page says so; never a 500)."""
    policy, limiter = getattr(runtime, "policy", None), getattr(runtime, "policy_limiter", None)
    if policy is None or limiter is None:
        return {"caps": []}
    try:
        caps = await limiter.session_caps(
            policy.engine.rules, session, summary.get("routes") or [], summary.get("agents") or [], time.time()
        )
    except StateUnavailable as exc:
        return {"caps": [], "caps_unavailable": str(exc)}
    return {"caps": caps}


async def policies(request: Request) -> Response:
    runtime: AdminState = request.app.state.runtime
    return JSONResponse(await policies_snapshot(runtime))


def routes() -> list[BaseRoute]:
    return [Route("/api/policies", policies, methods=["GET"])]


__all__ = ["policies_snapshot", "routes", "session_caps"]
