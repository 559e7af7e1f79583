"""Load generators: `wrk` for throughput and latency, a raw asyncio client for the rest.

wrk (C, one thread) drives the throughput and latency runs: a Python client on this 2-core machine
would itself be the bottleneck. The asyncio client (raw HTTP/1.1 over asyncio protocols, uvloop)
serves what wrk cannot: time to the first SSE event of a stream, an exact number of calls (so rows
in the store can be counted against requests sent), a fixed request rate, and per-call errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: What the openai Python SDK sends (v1.x), so per-header costs are measured as agents incur them.
DEFAULT_HEADERS = {
    "accept": "application/json",
    "accept-encoding": "gzip, deflate",
    "authorization": "Bearer sk-bench-0123456789abcdef0123456789abcdef",
    "content-type": "application/json",
    "user-agent": "OpenAI/Python 1.99.9",
    "x-stainless-arch": "x64",
    "x-stainless-async": "false",
    "x-stainless-lang": "python",
    "x-stainless-os": "Linux",
    "x-stainless-package-version": "1.99.9",
    "x-stainless-runtime": "CPython",
    "x-stainless-runtime-version": "3.11.7",
    "x-stainless-retry-count": "0",
    "x-stainless-read-timeout": "600",
    "x-interlock-agent": "bench",
}


def chat_body(size: int = 0, *, stream: bool = False, model: str = "gpt-4o-mini", text: str | None = None) -> bytes:
    """An OpenAI chat completion request; `size` pads the user message to about that many bytes."""
    content = text if text is not None else "What is the answer to life, the universe and everything?"
    if size:
        filler = "The quick brown fox jumps over the lazy dog. "
        content = (content + " " + filler * (size // len(filler) + 1))[: max(size - 120, len(content))]
    data: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        data["stream"] = True
    return json.dumps(data).encode()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


# -- wrk -------------------------------------------------------------------------------------------

#: A body containing this marker gets a fresh number in its place on every request (wrk `request()`),
#: so no two requests are alike (e.g. PII scanning whose cache must not help).
UNIQUE = b"@@N@@"

_LUA = """
local f = io.open(%(body)q, "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
%(headers)s
local at = string.find(wrk.body, "@@N@@", 1, true)
if at then
  local head, tail = string.sub(wrk.body, 1, at - 1), string.sub(wrk.body, at + 5)
  local n = 0
  request = function()
    n = n + 1
    return wrk.format(nil, nil, nil, head .. "%(run)s-" .. n .. tail)
  end
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,' ..
    '"timeout":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"mean":%%.2f,"max":%%d}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    non_2xx: int

    def row(self) -> str:
        return f"{self.rps:,.0f} req/s, p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms"


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal for ASCII


def wrk(
    url: str,
    body: bytes,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    threads: int = 1,
    timeout: float = 10.0,
) -> WrkResult:
    """POST `body` to `url` over `connections` keep-alive connections for `seconds`."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    body_path = workdir / "body.json"
    body_path.write_bytes(body)
    header_lines = "\n".join(
        f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in {**DEFAULT_HEADERS, **(headers or {})}.items()
    )
    script = workdir / "post.lua"
    script.write_text(
        _LUA.replace("%(body)q", lua_string(str(body_path)))
        .replace("%(headers)s", header_lines)
        .replace("%(run)s", os.urandom(6).hex())
        .replace("%%", "%")
    )
    args = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        f"{max(1, round(timeout))}s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[8:])
            secs = data["duration_us"] / 1e6
            return WrkResult(
                requests=data["requests"],
                seconds=secs,
                rps=data["requests"] / secs if secs else 0.0,
                p50_ms=data["p50"] / 1000.0,
                p90_ms=data["p90"] / 1000.0,
                p99_ms=data["p99"] / 1000.0,
                mean_ms=data["mean"] / 1000.0,
                errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
                non_2xx=data["status"],
            )
    raise RuntimeError(f"wrk gave no result: {out.stdout[-2000:]} {out.stderr[-2000:]}")


# -- the asyncio client ----------------------------------------------------------------------------


@dataclass
class Sample:
    status: int
    ttfb_ms: float  # request written → first body byte (first SSE event of a stream)
    total_ms: float
    error: str | None = None


@dataclass
class RunStats:
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None and 200 <= s.status < 300]

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if s.error is not None or not 200 <= s.status < 300]

    @property
    def rps(self) -> float:
        return len(self.samples) / self.seconds if self.seconds else 0.0

    def ttfb(self, q: float) -> float:
        return percentile([s.ttfb_ms for s in self.ok], q)

    def total(self, q: float) -> float:
        return percentile([s.total_ms for s in self.ok], q)

    def describe_failures(self) -> str:
        kinds: dict[str, int] = {}
        for s in self.failures:
            key = s.error or f"HTTP {s.status}"
            kinds[key] = kinds.get(key, 0) + 1
        return ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) or "none"


class _Response(asyncio.Protocol):
    """One keep-alive connection; `request()` sends one request and waits for its whole response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.reset()
        self.closed = False

    def reset(self) -> None:
        self.status = 0
        self.head_done = False
        self.length: int | None = None
        self.chunked = False
        self.body_seen = False
        self.t_first = 0.0
        self.finished = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        try:
            self._parse(now)
        except Exception as exc:  # malformed: fail this request
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc)

    def _parse(self, now: float) -> None:
        buf = self.buffer
        if not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            self.status = int(head[0].split()[1])
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip()
                if name == "content-length":
                    self.length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
                elif name == "connection" and value.lower() == "close":
                    self.keep_alive = False
            del buf[: end + 4]
            self.head_done = True
        if self.chunked:
            while True:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(buf[:line_end]).split(b";")[0], 16)
                if len(buf) < line_end + 2 + size + 2:
                    return
                if size and not self.body_seen:
                    self.body_seen, self.t_first = True, now
                del buf[: line_end + 2 + size + 2]
                if size == 0:
                    self._finish(now)
                    return
        else:
            length = self.length or 0
            if len(buf) and not self.body_seen:
                self.body_seen, self.t_first = True, now
            if len(buf) >= length:
                if not self.body_seen:
                    self.t_first = now
                del buf[:length]
                self._finish(now)

    def _finish(self, now: float) -> None:
        self.finished = True
        self.t_end = now
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def request(self, data: bytes) -> tuple[int, float, float]:
        assert self.transport is not None
        self.reset()
        self.waiter = asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        self.transport.write(data)
        await self.waiter
        return self.status, (self.t_first - start) * 1000.0, (self.t_end - start) * 1000.0


def raw_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in {**DEFAULT_HEADERS, **(headers or {})}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _connect(host: str, port: int) -> _Response:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Response, host, port)
    return protocol


async def run_calls(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    total: int | None = None,
    seconds: float | None = None,
    rate: float | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> RunStats:
    """Send calls over `concurrency` keep-alive connections: `total` of them, or for `seconds`;
    at most `rate` per second when given. Every call ends as a Sample (errors included)."""
    assert total is not None or seconds is not None
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port_text = hostport.partition(":")
    port = int(port_text)
    payload = raw_request(host, port, "/" + path, body, headers)
    stats = RunStats()
    issued = 0
    start = time.perf_counter()
    stop_at = start + seconds if seconds is not None else None

    def next_slot() -> float | None:
        """When the next call may start (None: no more calls)."""
        nonlocal issued
        if total is not None and issued >= total:
            return None
        now = time.perf_counter()
        if stop_at is not None and now >= stop_at:
            return None
        slot = start + issued / rate if rate else now
        issued += 1
        return slot

    async def worker() -> None:
        conn: _Response | None = None
        while (slot := next_slot()) is not None:
            delay = slot - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            began = time.perf_counter()
            try:
                if conn is None or conn.closed:
                    conn = await _connect(host, port)
                status, ttfb, whole = await asyncio.wait_for(conn.request(payload), timeout)
                stats.samples.append(Sample(status, ttfb, whole))
                if not conn.keep_alive and conn.transport is not None:
                    conn.transport.close()
                    conn = None
            except (OSError, ConnectionError, TimeoutError, ValueError) as exc:
                stats.samples.append(
                    Sample(0, 0.0, (time.perf_counter() - began) * 1000.0, type(exc).__name__ + ": " + str(exc)[:80])
                )
                if conn is not None and conn.transport is not None:
                    conn.transport.abort()
                conn = None
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stats.seconds = time.perf_counter() - start
    return stats


def run(coro: Any) -> Any:
    """Run a coroutine on uvloop when available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
