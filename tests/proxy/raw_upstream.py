"""A loopback upstream that answers every connection with fixed raw bytes (malformed HTTP, endless
bodies), for the faults no real HTTP server library would produce."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator


class RawUpstream:
    """Answers each request with `respond(connection)`; `requests` counts the connections served."""

    def __init__(self, respond: Callable[[socket.socket], None]) -> None:
        self.respond = respond
        self.requests = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._closed = True
        self._sock.close()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                read_request(conn)
                self.requests += 1
                self.respond(conn)
            except OSError:
                pass  # the proxy hung up first (it may, on a malformed reply): the tests judge what it relayed


def read_request(conn: socket.socket) -> bytes:
    """The request head and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = conn.recv(65536)
        if not part:
            return data
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        part = conn.recv(65536)
        if not part:
            break
        body += part
    return head


def fixed(raw: bytes) -> Callable[[socket.socket], None]:
    def respond(conn: socket.socket) -> None:
        conn.sendall(raw)

    return respond


def chunks(head: bytes, pieces: Callable[[], Iterator[bytes]]) -> Callable[[socket.socket], None]:
    """A head, then the pieces `pieces()` yields (a new generator per request) until the consumer hangs up."""

    def respond(conn: socket.socket) -> None:
        conn.sendall(head)
        for piece in pieces():
            conn.sendall(piece)

    return respond
