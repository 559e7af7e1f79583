"""The parse stage: the protocol adapter reads the request into a normalised view."""

from __future__ import annotations

from interlock.config import Settings
from interlock.core.call import Call
from interlock.protocols import ADAPTERS, BadRequest


class Parse:
    """Sets `call.view`, `model` and `stream`; malformed input is answered with a 4xx here. A route's
    `deployments` name the model a deployment serves: `call.model` is that model (what policy,
    limits and prices judge), `meta["deployment"]` the name the agent asked for."""

    name = "parse"

    def __init__(self, settings: Settings | None = None) -> None:
        routes = settings.routes if settings is not None else {}
        self.deployments = {name: route.deployments for name, route in routes.items() if route.deployments}

    async def request(self, call: Call) -> None:
        adapter = ADAPTERS[call.protocol]
        try:
            view = adapter.parse(call)
        except BadRequest as exc:
            call.answer(adapter.error_reply(exc.status, exc.code, exc.message), "bad_request", exc.code, exc.message)
            return
        call.view = view
        if call.request_json is not None:
            view.source = call.request_body
        deployments = self.deployments.get(call.route)
        if deployments is not None and (asked := view.rename_model(deployments)) is not None:
            call.meta["deployment"] = asked
        call.model = view.model
        call.stream = view.stream
