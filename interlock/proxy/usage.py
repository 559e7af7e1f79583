"""The usage stage: reads the finished response's token usage and prices the call (`interlock.prices`)."""

from __future__ import annotations

import dataclasses
import threading

from interlock.core.call import ATTEMPT_CANCELLED, Call
from interlock.core.views import TokenUsage
from interlock.prices import FREE, UNPRICED, Cost, Pricing, warm_catalogue
from interlock.protocols import ADAPTERS, Adapter

#: Characters a token, where the provider's count never arrived (the usual rule of thumb for English
#: text with OpenAI's and Anthropic's tokenizers). Only for a call the kill switch ended, or a stream
#: that reported no usage: its usage is estimated and marked so (`meta.usage_estimated`) rather than
#: left unpriced, so neither a stop nor a stream without usage can be used to evade a budget.
CHARS_PER_TOKEN = 4


def _tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)  # rounded up: a started token is billed


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
        unmetered = adapter.unmetered(call)
        if unmetered is not None and unmetered.free:
            # Not billed (counting tokens): $0, said so, and no tokens for a limit to count.
            call.input_tokens = call.output_tokens = 0
            call.cost_usd, call.cost_source = 0.0, FREE
            call.meta["cost_reason"] = unmetered.reason
            return
        call.input_tokens, call.output_tokens = adapter.usage(call)
        usage = adapter.token_usage(call)
        if call.halted is not None:
            usage = _as_far_as_known(call, adapter, usage)
        elif usage is None and unmetered is None and _unreported(call):
            # A model's answer that reported no usage (an OpenAI chat stream whose upstream was not
            # asked for it, `stream_usage: off`, or ignored the ask; an OpenAI-compatible server that
            # leaves `usage` out of a whole answer): estimated as a stopped one is, and counted, never
            # a $0 pass through a budget.
            usage = _as_far_as_known(call, adapter, None)
            call.meta["usage_estimated"] = True
            what = "its stream" if call.stream else "its answer"
            call.meta["cost_reason"] = (
                f"{what} carried no token usage: estimated at {CHARS_PER_TOKEN} characters a token"
            )
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
        if cost is None and usage is None and call.view is not None and call.view.model is not None:
            # A model call whose response reported no usage: unpriced, with the reason, never a
            # silent $0 (a money budget decided on it before it was sent: `Pricing.unpriced_reason`).
            call.meta["cost_reason"] = (
                unmetered.reason if unmetered is not None else "its response carries no token usage"
            )
            cost = Cost(None, UNPRICED)
        self._set_cost(call, cost)

    async def seal(self, call: Call) -> None:
        """A call the kill switch ended before its answer's head arrived never reached `response`,
        yet the upstream had its request and may bill the prompt: priced on its estimated input
        (`meta.usage_estimated`), so policy's `seal` (after this one) counts it against budgets."""
        if call.halted is None or call.input_tokens is not None or call.cost_usd is not None:
            return
        if not _sent_unanswered(call):
            return  # stopped before it left (the request stages), or its upstream had failed it: nothing billed
        view = call.view
        call.input_tokens = _tokens(view.input_chars if view is not None else 0)
        call.output_tokens = 0
        call.meta["usage_estimated"] = True
        await self.pricing.ready()
        self._set_cost(call, self.pricing.price_call(call, TokenUsage(input=call.input_tokens, output=0)))

    @staticmethod
    def _set_cost(call: Call, cost: Cost | None) -> None:
        if cost is not None:
            call.cost_usd = None if cost.usd is None else round(cost.usd, 10)
            call.cost_source = cost.source


def _unreported(call: Call) -> bool:
    """A model call (its request names a model) whose response gave neither token count."""
    return (
        call.input_tokens is None
        and call.output_tokens is None
        and call.view is not None
        and call.view.model is not None
    )


def _sent_unanswered(call: Call) -> bool:
    """The call's last upstream attempt was on its way when the kill switch ended it: cancelled
    before its answer (the forwarder marks it so), or answered with a success head."""
    if not call.attempts:
        return False
    last = call.attempts[-1]
    if last.status is None:
        return last.error == ATTEMPT_CANCELLED
    return last.status < 400


def _as_far_as_known(call: Call, adapter: Adapter, reported: TokenUsage | None) -> TokenUsage:
    """A stopped call's usage: what the stream reported before the stop (Anthropic's `message_start`
    gives the input; OpenAI reports usage only at the end), raised to an estimate from the texts
    sent and relayed where that is larger; marked estimated when it is."""
    view = call.view
    estimate = TokenUsage(
        input=_tokens(view.input_chars if view is not None else 0), output=_tokens(_output_chars(call, adapter))
    )
    usage = reported if reported is not None else TokenUsage(call.input_tokens or 0, call.output_tokens or 0)
    if estimate.input > usage.input or estimate.output > usage.output:
        usage = dataclasses.replace(
            usage, input=max(usage.input, estimate.input), output=max(usage.output, estimate.output)
        )
        call.meta["usage_estimated"] = True
    call.input_tokens, call.output_tokens = usage.input, usage.output
    return usage


def _output_chars(call: Call, adapter: Adapter) -> int:
    """The characters of text (and tool arguments) the upstream produced: from the stream's events as
    the proxy kept them. A stream past what is kept (`StreamRead.limit`, 4 MiB) counts its bytes
    instead (more than its text: an over-estimate, never a $0), so the estimate never reassembles a
    large record on the event loop."""
    response = adapter.response_view(call)
    read = response.stream_read
    if call.stream and read is not None and read.events is None:
        return read.size
    return sum(len(t.text) for t in response.texts)
