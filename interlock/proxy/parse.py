"""The parse stage: the protocol adapter reads the request into a normalised view."""

from __future__ import annotations

from interlock.proxy.protocols import ADAPTERS, BadRequest
from interlock.tracing.call import Call


class Parse:
    """Sets `call.view`, `model` and `stream`; malformed input is answered with a 4xx here."""

    name = "parse"

    async def request(self, call: Call) -> None:
        adapter = ADAPTERS[call.protocol]
        try:
            view = adapter.parse(call)
        except BadRequest as exc:
            call.answer(adapter.error_reply(exc.status, exc.code, exc.message), "bad_request", exc.code, exc.message)
            return
        call.view = view
        call.model = view.model
        call.stream = view.stream
