"""Stream rescue, the wire-format half (issue 21): follow a stream as it is relayed, say whether it can
be continued, build the continuation request, and rewrite the continuation's events so that they
read as the rest of the same stream.

The proxy half (`proxy/rescue.py`) decides when and where; only this module knows what an OpenAI
chat or Anthropic messages stream looks like. A continuation is spliced so that the SDKs' stream
accumulators see one message: the original message id (and `created`), content block indices that
go on where the broken stream stopped (Anthropic), no second `message_start` or role delta, one
final usage that adds both parts, and one terminator (the continuation's).

What cannot be continued, and why (`blocker`):
- a stream that already emitted a tool call (or a `thinking`/server-tool block): a prefill is plain
  assistant text, so the fallback would not know the call was made and could make it again, and a
  half-streamed call's arguments cannot be finished by another model without guessing;
- a refusal, several choices (`n` > 1), or an operation other than chat completions / messages
  (the Responses API has no prefill).
"""

from __future__ import annotations

from typing import Any

from interlock.core.views import Event
from interlock.protocols.base import dump_body

#: How a target continues an assistant prefill (`upstreams[].prefill`); see docs/routing.md.
PREFILL_STYLES = ("assistant", "prefix", "continue_final_message", "none")


class StreamRescue:
    """Follows one stream (`observe`), then splices one continuation into it (`splice`)."""

    def __init__(self) -> None:
        self.text: list[str] = []  # the assistant text relayed so far, in pieces
        self.deltas = 0  # text deltas relayed (the output-token estimate for a part with no usage)
        self.blocker: str | None = None
        #: An error event the upstream sent mid-stream: held back, since a rescue may hide it; it is
        #: relayed when the stream cannot be continued (the agent then gets the original failure).
        self.held_error: bytes | None = None
        self.usage_estimated = False
        self._pending_space = ""  # whitespace delivered but left out of the prefill
        self._continued = False

    @property
    def delivered(self) -> str:
        return "".join(self.text)

    # -- the original stream ------------------------------------------------------------------

    def observe(self, event: Event) -> bool:
        """Note one event of the original stream; False: hold it back (an upstream error event)."""
        raise NotImplementedError

    # -- the continuation ---------------------------------------------------------------------

    def request(self, data: Any, style: str) -> tuple[Any, str] | None:
        """The continuation request and its mode (`prefill`, or `restart` when only whitespace was
        delivered), for a target that continues prefills in `style`; None when it cannot."""
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            return None
        text = self.delivered
        if not text.strip():
            # Nothing the agent could read yet: the answer starts over (a clean restart).
            self._pending_space = text
            return data, "restart"
        if style == "none":
            return None
        prefill = text.rstrip()  # Anthropic refuses a prefill that ends in whitespace
        self._pending_space = text[len(prefill) :]
        out = self._with_prefill(data, prefill, style)
        # The agent's output bound is for the whole answer: the continuation gets what is left of it
        # (the delivered part estimated as one token per delta, as the usage is).
        for key in ("max_tokens", "max_completion_tokens"):
            if isinstance(out.get(key), int):
                out[key] = max(1, out[key] - self.deltas)
        return out, "prefill"

    def _with_prefill(self, data: dict[str, Any], prefill: str, style: str) -> dict[str, Any]:
        messages = list(data["messages"])
        last = messages[-1] if messages else None
        if isinstance(last, dict) and last.get("role") == "assistant":
            # The agent prefilled the answer itself: what was streamed continues its prefill.
            content = last.get("content")
            if isinstance(content, str):
                merged: Any = content + prefill
            elif isinstance(content, list):
                merged = [*content, {"type": "text", "text": prefill}]
            else:
                merged = prefill
            messages[-1] = {**last, "content": merged}
        else:
            messages.append({"role": "assistant", "content": prefill})
        out = {**data, "messages": messages}
        if style == "prefix":  # DeepSeek, Mistral: the last assistant message is a prefix to continue
            messages[-1] = {**messages[-1], "prefix": True}
        elif style == "continue_final_message":  # vLLM, SGLang
            out["continue_final_message"] = True
            out["add_generation_prompt"] = False
        return out

    def splice(self, event: Event) -> Event | None:
        """One continuation event rewritten as part of the original stream (None: dropped)."""
        raise NotImplementedError

    def _text(self, piece: str) -> str:
        """A continuation text delta without the whitespace the agent already got (left out of the
        prefill, and often repeated by the model at the start of its continuation)."""
        pending = self._pending_space
        if not pending or not piece:
            return piece
        k = 0
        while k < len(piece) and k < len(pending) and piece[k] == pending[k]:
            k += 1
        self._pending_space = pending[k:] if k == len(piece) else ""
        return piece[k:]


def _loads(event: Event) -> Any:
    return event.json()  # parsed once, shared with the stages that read the event: never changed here


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


class AnthropicRescue(StreamRescue):
    """Anthropic messages: a text prefill is the last (assistant) message."""

    def __init__(self) -> None:
        super().__init__()
        self.message_id: str | None = None
        self.usage: dict[str, Any] = {}
        self.reported_output: int | None = None  # a message_delta's output_tokens, if one came
        self.blocks = 0  # content blocks started
        self.open_text: int | None = None  # the index of the text block still open, if any
        self._index: dict[int, int] = {}  # continuation block index → spliced index
        self._dropped: set[int] = set()  # continuation blocks merged into the open one
        self._cont_usage: dict[str, Any] = {}

    def observe(self, event: Event) -> bool:
        if event.event == "error":
            self.held_error = event.raw
            return False
        data = _loads(event)
        if not isinstance(data, dict):
            return True
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                self.text.append(delta["text"])
                self.deltas += 1
        elif kind == "message_start":
            message = data.get("message") or {}
            self.message_id = message.get("id")
            self.usage = dict(message.get("usage") or {})
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            self.blocks += 1
            if block.get("type") == "text":
                self.open_text = data.get("index")
            else:
                self.open_text = None
                self.blocker = f"the stream emitted a {block.get('type')} block"
        elif kind == "content_block_stop":
            self.open_text = None
        elif kind == "message_delta":
            usage = data.get("usage") or {}
            if isinstance(usage.get("output_tokens"), int):
                self.reported_output = usage["output_tokens"]
        return True

    def splice(self, event: Event) -> Event | None:
        data = _loads(event)
        if not isinstance(data, dict):
            return event
        kind = data.get("type")
        if kind == "message_start":
            self._cont_usage = dict((data.get("message") or {}).get("usage") or {})
            if self.message_id is None:  # the break came before the agent had its message_start
                self.message_id = (data.get("message") or {}).get("id")
                return event
            return None
        if kind in ("content_block_start", "content_block_delta", "content_block_stop"):
            index = data.get("index")
            if not isinstance(index, int):
                return event
            if kind == "content_block_start":
                block = data.get("content_block") or {}
                if not self._continued and self.open_text is not None and block.get("type") == "text":
                    # The continuation's first text block goes on in the block the break left open.
                    self._index[index] = self.open_text
                    self._dropped.add(index)
                    self._continued = True
                    return None
                self._continued = True
                self._index[index] = self.blocks
                self.blocks += 1
            elif index in self._dropped and kind == "content_block_stop":
                self._dropped.discard(index)  # the open block ends here, under its own index
            spliced = self._index.get(index, index)
            data = {**data, "index": spliced}
            delta = data.get("delta")
            if kind == "content_block_delta" and isinstance(delta, dict) and delta.get("type") == "text_delta":
                text = self._text(str(delta.get("text") or ""))
                if not text:
                    return None
                data["delta"] = {**delta, "text": text}
            return _event(event.event, data)
        if kind == "message_delta":
            return _event(event.event, {**data, "usage": self._summed(data.get("usage") or {})})
        return event

    def _summed(self, final: dict[str, Any]) -> dict[str, Any]:
        """The continuation's final usage plus the broken part's (its output estimated from the text
        deltas relayed when it broke before reporting any)."""
        first = self.usage
        output = self.reported_output
        if output is None:
            output = max(_int(first.get("output_tokens")), self.deltas)
            self.usage_estimated = True
        summed = {**self._cont_usage, **final, "output_tokens": output + _int(final.get("output_tokens"))}
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            if key in first or key in self._cont_usage or key in final:
                second = final.get(key, self._cont_usage.get(key))
                summed[key] = _int(first.get(key)) + _int(second)
        return summed


class ChatRescue(StreamRescue):
    """OpenAI chat completions: a prefill only where the target says it continues one (`prefill`)."""

    def __init__(self) -> None:
        super().__init__()
        self.top: dict[str, Any] = {}  # the first chunk's id and created
        self.reported: dict[str, Any] | None = None  # a usage chunk before the break, if any

    def observe(self, event: Event) -> bool:
        data = _loads(event)
        if not isinstance(data, dict):
            return True
        if "error" in data:
            self.held_error = event.raw
            return False
        if not self.top and "id" in data:
            self.top = {k: data[k] for k in ("id", "created") if k in data}
        if isinstance(data.get("usage"), dict):
            self.reported = data["usage"]
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) != 0:
                self.blocker = "the stream has several choices (n > 1)"
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or delta.get("function_call"):
                self.blocker = "the stream emitted a tool call"
            if delta.get("refusal"):
                self.blocker = "the stream is a refusal"
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.text.append(content)
                self.deltas += 1
        return True

    def splice(self, event: Event) -> Event | None:
        data = _loads(event)
        if not isinstance(data, dict) or "error" in data:
            return event
        data = {**data, **self.top}
        choices = data.get("choices")
        if isinstance(choices, list):
            out = []
            for choice in choices:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    delta = {k: v for k, v in delta.items() if k != "role"}  # the role came once already
                    if isinstance(delta.get("content"), str) and delta["content"]:
                        text = self._text(delta["content"])
                        if not text and choice.get("finish_reason") is None and len(delta) == 1:
                            continue
                        delta["content"] = text
                    choice = {**choice, "delta": delta}
                out.append(choice)
            if choices and not out:
                return None
            data["choices"] = out
        if isinstance(data.get("usage"), dict):
            data["usage"] = self._summed(data["usage"])
        return _event(event.event, data)

    def _summed(self, final: dict[str, Any]) -> dict[str, Any]:
        """The continuation's usage plus the broken part's. A chat stream reports usage only at its
        end, so a part that broke is estimated: its output from the content deltas relayed, its
        prompt as the continuation's prompt less the prefill (that same output)."""
        first = self.reported
        if first is None:
            self.usage_estimated = True
            output = self.deltas
            prompt = max(0, _int(final.get("prompt_tokens")) - output)
        else:
            output, prompt = _int(first.get("completion_tokens")), _int(first.get("prompt_tokens"))
        completion = output + _int(final.get("completion_tokens"))
        prompt += _int(final.get("prompt_tokens"))
        return {**final, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _event(name: str | None, data: Any) -> Event:
    head = f"event: {name}\n".encode() if name else b""
    return Event(head + b"data: " + dump_body(data) + b"\n\n", name, None, data)


def stream_rescue(protocol: str, operation: str | None) -> StreamRescue | None:
    """The rescue for a stream of this protocol and operation, if it can be continued at all."""
    if operation != "chat":  # chat completions and Anthropic messages: the Responses API has no prefill
        return None
    if protocol == "anthropic":
        return AnthropicRescue()
    if protocol == "openai":
        return ChatRescue()
    return None


__all__ = ["PREFILL_STYLES", "AnthropicRescue", "ChatRescue", "StreamRescue", "stream_rescue"]
