"""The export worker process: finished calls go to a child process that turns them into OTel data.

Building spans and metric points with the OpenTelemetry SDK and encoding them to OTLP costs, in
Python, a few hundred µs per call: a third of the proxy's own CPU per call (measured: about 750 µs).
In a thread that would compete with the event loop for the GIL; in a child process it runs on
another core. This process only copies the few fields export reads into a tuple, and a feeder
thread pickles them in batches down a pipe.

    parent: done(call) → bounded queue → feeder thread → [pipe] → child: Exporter.export(call)
    child:  flush acks, statistics and its warnings → [pipe] → parent's reader thread

The child (`child.py`) exits when the pipe closes, so it never outlives interlock.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from operator import attrgetter
from pathlib import Path
from typing import IO, Any

import interlock
from interlock.config import Otel
from interlock.core.call import Attempt, Call, Chunk, Decision, Finding, Reply
from interlock.core.fields import WIRE_SCALARS
from interlock.core.views import RequestView
from interlock.protocols import ADAPTERS

log = logging.getLogger("interlock.otel")

_LENGTH = struct.Struct(">I")
#: Response headers export reads (content decoding, MCP session); no others cross the pipe.
_HEADERS = frozenset({"content-type", "content-encoding", "mcp-session-id", "mcp-protocol-version"})
#: A stream's first chunks and its last bytes hold what export reads (see protocols/summary.py).
_HEAD_CHUNKS = 4
_TAIL_BYTES = 8192
#: How long the feeder gathers calls before pickling them down the pipe in one write.
_GATHER_SECONDS = 0.05


# -- the wire: a Call as a tuple of what export reads --------------------------------------------
# The scalar fields marked `wire` in `fields.FIELDS` cross as they are, as one tuple; the rest
# cross by the rules below (headers filtered, bodies and chunks cut with capture off, no finding's
# value, the request JSON only as its JSON-RPC id).
_wire_scalars = attrgetter(*WIRE_SCALARS)


def to_wire(call: Call, capture_content: bool) -> tuple[Any, ...]:
    view = call.view
    view_tuple = None if view is None else (view.operation, view.model, view.stream, view.params, view.tool_name)
    request_json = call.request_json
    rpc_id = ADAPTERS[call.protocol].rpc_id(request_json)
    chunks: list[Chunk] = call.chunks
    if not capture_content and len(chunks) > 2 * _HEAD_CHUNKS:
        tail_start, size = len(chunks), 0
        while tail_start > _HEAD_CHUNKS and size < _TAIL_BYTES:
            tail_start -= 1
            size += len(chunks[tail_start].data)
        chunks = chunks[:_HEAD_CHUNKS] + chunks[tail_start:]
    return (
        _wire_scalars(call),
        [(k, v) for k, v in call.request_headers if k in _HEADERS],
        [(k, v) for k, v in call.response_headers if k in _HEADERS],
        call.request_body if capture_content else b"",
        call.upstream_body if capture_content else None,
        rpc_id,
        view_tuple,
        call.response_body if not call.stream else None,
        call.agent_response_body if capture_content else None,
        [(c.t_ms, c.data) for c in chunks],
        None if not capture_content or call.agent_chunks is None else [(c.t_ms, c.data) for c in call.agent_chunks],
        [(d.stage, d.action, d.rule, d.reason, d.t_ms) for d in call.decisions],
        [(f.entity, f.where, f.start, f.end, f.score, f.action) for f in call.findings],  # never the value
        [
            (a.upstream, a.url, a.model, a.started_ms, a.duration_ms, a.ttfb_ms, a.status, a.error, a.backoff_ms)
            for a in call.attempts
        ],
        call.reply is not None,
    )


def from_wire(data: tuple[Any, ...]) -> Call:
    (
        scalars,
        request_headers,
        response_headers,
        request_body,
        upstream_body,
        rpc_id,
        view,
        response_body,
        agent_response_body,
        chunks,
        agent_chunks,
        decisions,
        findings,
        attempts,
        replied,
    ) = data
    call = Call(**dict(zip(WIRE_SCALARS, scalars, strict=True)))
    call.request_headers, call.response_headers = request_headers, response_headers
    call.request_body, call.upstream_body = request_body, upstream_body
    call.request_json = {"id": rpc_id} if rpc_id is not None else None
    if view is not None:
        operation, view_model, view_stream, params, tool_name = view
        call.view = RequestView(operation, view_model, view_stream, params=params, tool_name=tool_name)
    call.response_body, call.agent_response_body = response_body, agent_response_body
    call.chunks = [Chunk(t, d) for t, d in chunks]
    call.agent_chunks = None if agent_chunks is None else [Chunk(t, d) for t, d in agent_chunks]
    call.decisions = [Decision(s, a, r, reason, t_ms=t) for s, a, r, reason, t in decisions]
    call.findings = [Finding(e, w, s, end, score, action) for e, w, s, end, score, action in findings]
    call.attempts = [Attempt(*a) for a in attempts]  # to_wire writes Attempt's fields in their order
    if replied:
        call.reply = Reply(call.status or 0, b"")
    return call


def write_frame(stream: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(payload)) + payload)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return pickle.loads(payload)


# -- the parent's side ---------------------------------------------------------------------------


class RemoteHealth:
    """The child's export failures for one signal, as last reported."""

    def __init__(self, what: str, failures: int) -> None:
        self.what, self.failures = what, failures


class ProcessExporter:
    """Stage: queues each finished call for the export process (never blocks; drops when full)."""

    name = "export"

    def __init__(self, config: Otel) -> None:
        self.config = config
        self.capture_content = config.capture_content
        self.queue_size = config.queue_size
        self.dropped = 0  # calls not exported: the queue was full, or the export process is gone
        self.exported = 0  # as last reported by the child
        self.health: list[RemoteHealth] = []
        self._queue: queue.SimpleQueue[Call | int | None] = queue.SimpleQueue()
        self._acks: dict[int, threading.Event] = {}
        self._next_token = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()  # ends the feeder's gathering early: a flush or close
        self._closed = False
        self._dead = False
        env = dict(os.environ)
        package_root = str(Path(interlock.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "interlock.otel.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        write_frame(self.process.stdin, ("config", config.model_dump()))
        self._feeder = threading.Thread(target=self._feed, name="interlock-otel-feeder", daemon=True)
        self._reader = threading.Thread(target=self._read, name="interlock-otel-reader", daemon=True)
        self._feeder.start()
        self._reader.start()

    def done(self, call: Call) -> None:
        """The call is final: queue it for export."""
        if self._closed or self._dead or self._queue.qsize() >= self.queue_size:
            self.dropped += 1
            return
        self._queue.put(call)

    def _feed(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        capture = self.capture_content
        while True:
            first = self._queue.get()  # idle: sleep until a call arrives
            if isinstance(first, Call):
                # Gather for a while instead of waking for every call: each wake-up of this thread
                # takes the GIL from the event loop (measured: ~300 µs of CPU per call between the
                # two threads when it woke per call, against ~15 µs gathering).
                self._wake.wait(_GATHER_SECONDS)
                self._wake.clear()
            items: list[Call | int | None] = [first]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch: list[tuple[Any, ...]] = []
            try:
                for item in items:
                    if isinstance(item, Call):
                        batch.append(to_wire(item, capture))
                        continue
                    if batch:
                        write_frame(stdin, ("calls", batch))
                        batch = []
                    if item is None:
                        write_frame(stdin, ("close", None))
                        stdin.close()
                        return
                    write_frame(stdin, ("flush", item))
                if batch:
                    write_frame(stdin, ("calls", batch))
            except (BrokenPipeError, OSError, ValueError):
                self._gone(len(batch))
                return

    def _gone(self, lost: int) -> None:
        if not self._dead and not self._closed:
            log.warning("the OTel export process exited (code %s); calls are no longer exported", self.process.poll())
        self._dead = True
        self.dropped += lost
        for event in list(self._acks.values()):
            event.set()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            message = read_frame(stdout)
            if message is None:
                self._gone(0)
                return
            kind = message[0]
            if kind == "log":
                log.log(message[1], "%s", message[2])
            elif kind in ("flushed", "closed"):
                stats = message[-1]
                self.exported = stats["exported"]
                self.health = [RemoteHealth(what, failures) for what, failures in stats["health"]]
                if kind == "flushed":
                    event = self._acks.pop(message[1], None)
                    if event is not None:
                        event.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the child exported every call queued so far (and handed it to the collector)."""
        if self._dead or self._closed:
            return False
        with self._lock:
            self._next_token += 1
            token = self._next_token
            event = self._acks[token] = threading.Event()
        self._queue.put(token)
        self._wake.set()
        return event.wait(timeout) and not self._dead

    def close(self, timeout: float = 5.0) -> None:
        """Export what is queued, then stop the child; bounded by `timeout` even with no collector."""
        if self._closed:
            return
        self._queue.put(None)
        self._wake.set()
        self._feeder.join(timeout)
        self._closed = True
        try:
            self.process.wait(timeout + 1)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(1)
        if self.process.stdout is not None:
            self.process.stdout.close()
