"""StreamCapture alone: what is kept of a stream for the record, and whether it carried its terminator."""

from __future__ import annotations

import json

from interlock.core.call import Call, Chunk
from interlock.protocols import ADAPTERS
from interlock.proxy.capture import TAIL_BYTES, StreamCapture

DONE = (b"data: [DONE]",)


def fed(pieces: list[bytes], limit: int = 1 << 20, markers: tuple[bytes, ...] = DONE) -> StreamCapture:
    capture = StreamCapture([], limit, markers)
    for i, piece in enumerate(pieces):
        capture.add(Chunk(float(i), piece))
    return capture


def test_the_terminator_is_found_whole_or_split_over_chunks() -> None:
    assert fed([b'data: {"a":1}\n\n', b"data: [DONE]\n\n"]).ended
    assert fed([b'data: {"a":1}\n\ndata: [DO', b"NE]\n\n"]).ended
    assert fed([b"data: [DONE]\n\n"]).ended  # at the very start


def test_the_terminator_inside_a_json_string_does_not_count() -> None:
    assert not fed([b'data: {"content": "say data: [DONE] now"}\n\n']).ended


def test_a_protocol_without_a_terminator_ends_when_the_stream_does() -> None:
    assert fed([b"event: message\ndata: {}\n\n"], markers=()).ended


def test_past_the_limit_the_head_and_a_tail_are_kept_and_the_cut_is_marked() -> None:
    piece = b"x" * 1000
    capture = fed([piece] * 1000, limit=10_000)
    call = Call(id="c", route="r", protocol="openai", method="POST", path="/")
    capture.finish(call, "upstream")
    kept = sum(len(c.data) for c in capture.chunks)
    assert capture.total == 1_000_000
    assert 10_000 + TAIL_BYTES <= kept <= 10_000 + TAIL_BYTES + 1000
    cut = call.meta["record_cut"]["upstream"]
    assert cut["dropped_bytes"] + kept == 1_000_000
    assert [c.t_ms for c in capture.chunks][-1] == 999.0  # the last chunk is kept


def test_an_ndjson_stream_ends_only_when_its_last_line_says_so_at_the_top_level() -> None:
    # Ollama: the terminator is a field, `"done": true`, which a tool call's arguments may also hold.
    adapter = ADAPTERS["ollama"]

    def ollama(pieces: list[bytes]) -> StreamCapture:
        capture = StreamCapture([], 1 << 20, adapter.stream_end_markers, False, adapter.last_line_ends_stream)
        for i, piece in enumerate(pieces):
            capture.add(Chunk(float(i), piece))
        return capture

    tool = b'{"message":{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":{"done":true}}}]},"done":false}\n'
    last = b'{"model":"m","message":{"role":"assistant","content":""},"done_reason":"stop","done":true}\n'
    assert not ollama([b'{"message":{"content":"a"},"done":false}\n', tool]).ended  # cut after the tool call
    assert ollama([tool, last]).ended
    assert ollama([tool + last[:20], last[20:]]).ended  # the last line split over chunks
    assert ollama([tool, last[:-1], b"\n", b"\n"]).ended  # its newline, and a blank line, apart
    assert ollama([tool + last[:-1]]).ended  # no newline at the end
    assert not ollama([tool, last[:40]]).ended  # the last line cut


def test_an_ndjson_stream_past_the_record_limit_ends_by_a_last_line_longer_than_the_tail() -> None:
    # Past `record_max_bytes` only a TAIL_BYTES tail is kept, and `/api/generate`'s last line carries
    # the conversation's token ids (`context`): ~200 KB for 30,000 tokens, read over several chunks.
    adapter = ADAPTERS["ollama"]
    capture = StreamCapture([], 1024, adapter.stream_end_markers, False, adapter.last_line_ends_stream)
    for i in range(50):
        capture.add(Chunk(float(i), b'{"model":"m","response":"' + b"x" * 40 + b'","done":false}\n'))
    last = json.dumps({"model": "m", "response": "", "done": True, "context": list(range(30_000))}).encode()
    assert len(last) > 2 * TAIL_BYTES
    for start in range(0, len(last), 16_384):
        capture.add(Chunk(99.0, last[start : start + 16_384]))
    capture.add(Chunk(99.0, b"\n"))
    assert capture.ended
    cut = StreamCapture([], 1024, adapter.stream_end_markers, False, adapter.last_line_ends_stream)
    cut.add(Chunk(0.0, b'{"response":"a","done":false}\n'))
    for start in range(0, len(last) - 100, 16_384):  # the same stream, its last line cut short
        cut.add(Chunk(99.0, last[start : min(start + 16_384, len(last) - 100)]))
    assert not cut.ended
