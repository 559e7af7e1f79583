"""The Python floor (issue 18): the least a Python relay on interlock's own stack does per call, as a
reference row for interlock's figures in the same run.

A bare starlette app under uvicorn (httptools, uvloop: what `interlock serve` runs) that relays
`/<anything>/<path>` to the upstream with httpx over the httpx-aiohttp transport (interlock's
upstream client) and streams the answer back chunk by chunk: no stages, no parsing, no recording.
Whatever interlock adds on top of this is interlock's own cost; what this costs is the stack's.

    python -m bench.floor --port 8080 --upstream http://127.0.0.1:9000/v1   # serve (prints "ready")
    python -m bench.floor --compare                                         # first byte, c32: floor vs interlock
    python -m bench.floor --compare --before ../interlock-old               # ... and another checkout (its .venv)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

#: Request headers not relayed (hop-by-hop, and the ones the client sets itself).
_DROP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length"})


def create_app(upstream: str) -> Starlette:
    client = httpx.AsyncClient(
        transport=AiohttpTransport(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30),
            trust_env=False,
        ),
        timeout=httpx.Timeout(60.0),
    )

    async def relay(request: Request) -> StreamingResponse:
        path = request.path_params["path"]
        headers = [(k, v) for k, v in request.headers.items() if k not in _DROP]
        upstream_request = client.build_request(
            request.method, f"{upstream}/{path}", headers=headers, content=await request.body()
        )
        response = await client.send(upstream_request, stream=True)
        relayed = {k: v for k, v in response.headers.items() if k not in _DROP}

        async def body() -> AsyncIterator[bytes]:
            async for chunk in response.aiter_raw():
                yield chunk

        return StreamingResponse(body(), response.status_code, relayed, background=BackgroundTask(response.aclose))

    return Starlette(routes=[Route("/{route}/{path:path}", relay, methods=["GET", "POST"])])


def serve(port: int, upstream: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        create_app(upstream), host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning"
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.01)
        print("ready", flush=True)
        await task

    asyncio.run(main())


def compare(streams: int, rounds: int, before: str | None = None) -> dict[str, Any]:
    """Stream first byte at c32, interlock (default configuration, recording on) and the floor, in one
    run against one fake upstream, alternating `rounds` times (so load from elsewhere falls on all):
    the median of each round's p50 and p99. `before`: another checkout of interlock (with its own
    `.venv`), measured alongside as "before"."""
    from bench import harness, load

    body = load.chat_body(stream=True)
    names = ["interlock", "floor"] + (["before"] if before else [])
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    failures = 0
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(harness.fake_upstream())
        urls: dict[str, str] = {}
        for name in names:
            if name == "floor":
                proc = stack.enter_context(harness.floor(up.url + "/v1"))
            else:
                config = harness.interlock_config(up.url + "/v1", Path(tempfile.mkdtemp(prefix=f"bench-{name}-")))
                python = str(Path(before) / ".venv" / "bin" / "python") if name == "before" and before else None
                proc = stack.enter_context(harness.interlock(config, name=name, python=python or harness.PYTHON))
            urls[name] = proc.url + "/openai/chat/completions"
        for url in urls.values():  # warm each: connections, pools, first-call imports
            load.run(load.run_calls(url, body, concurrency=32, total=64))
        for _ in range(rounds):
            for name, url in urls.items():
                stats = load.run(load.run_calls(url, body, concurrency=32, total=streams))
                failures += len(stats.failures)
                results[name].append((stats.ttfb(50), stats.ttfb(99)))
    summary: dict[str, Any] = {
        name: {
            "p50_ms": statistics.median(p50 for p50, _ in runs),
            "p99_ms": statistics.median(p99 for _, p99 in runs),
        }
        for name, runs in results.items()
    }
    summary["failures"] = failures
    summary["streams"] = streams
    summary["rounds"] = rounds
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--upstream")
    parser.add_argument("--compare", action="store_true", help="first byte at c32: interlock vs the floor")
    parser.add_argument("--streams", type=int, default=320, help="streams per round (with --compare)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (with --compare)")
    parser.add_argument("--before", help="another checkout of interlock (with its .venv), measured as 'before'")
    args = parser.parse_args(argv)
    if args.compare:
        result = compare(args.streams, args.rounds, args.before)
        for name in ("before", "interlock", "floor"):
            if name not in result:
                continue
            p50, p99 = result[name]["p50_ms"], result[name]["p99_ms"]
            print(f"{name:9}  stream first byte c32: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        print(f"({result['rounds']} alternating rounds of {result['streams']} streams; failures: {result['failures']})")
        return 0
    if args.port is None or args.upstream is None:
        parser.error("--port and --upstream (or --compare)")
    serve(args.port, args.upstream.rstrip("/"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
