"""The usage stage: reads the finished response's token usage and prices the call (`interlock.prices`)."""

from __future__ import annotations

import threading

from interlock.core.call import Call
from interlock.core.views import TokenUsage
from interlock.prices import Pricing, warm_catalogue
from interlock.protocols import ADAPTERS


class Usage:
    """Sets `input_tokens`, `output_tokens`, `cost_usd` and `cost_source` (streamed or not); a
    response with cache or reasoning tokens keeps them in `meta["usage"]`."""

    name = "usage"

    def __init__(self, pricing: Pricing | None = None) -> None:
        self.pricing = pricing or Pricing()
        #: The price catalogue loads in a thread from startup on; `/ready` waits for it.
        self.warmed: threading.Event = warm_catalogue()

    async def response(self, call: Call) -> None:
        if call.status is None or call.status >= 400:
            return  # an error is not billed (and interlock's own refusals never reach here)
        adapter = ADAPTERS[call.protocol]
        call.input_tokens, call.output_tokens = adapter.usage(call)
        usage = adapter.token_usage(call)
        if usage is None and (call.input_tokens is not None or call.output_tokens is not None):
            # An adapter that reports only the two counts is still priced (never a silent $0).
            usage = TokenUsage(input=call.input_tokens or 0, output=call.output_tokens or 0)
        if usage is not None and (usage.cache_read or usage.cache_write or usage.reasoning):
            call.meta["usage"] = {
                "input": usage.input,
                "output": usage.output,
                "cache_read": usage.cache_read,
                "cache_write": usage.cache_write,
                "reasoning": usage.reasoning,
            }
        await self.pricing.ready()
        cost = self.pricing.price_call(call, usage)
        if cost is not None:
            call.cost_usd = None if cost.usd is None else round(cost.usd, 10)
            call.cost_source = cost.source
