"""The export worker process's own side (`python -m interlock.otel.child`, started by
`process.ProcessExporter`): it reads the calls the parent sends down the pipe and exports them with
an in-process `Exporter`; flush acks, statistics and its warnings go back up the pipe. Its own module:
the exporter's factory starts it, and it builds an exporter, so neither module imports the other in
a loop."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import IO, Any

from interlock.config import Otel
from interlock.otel.exporter import local_exporter
from interlock.otel.process import from_wire, read_frame, write_frame


class _ForwardLogs(logging.Handler):
    """Warnings in the child go to the parent's log (its stdout is the pipe, its stderr is shared)."""

    def __init__(self, out: IO[bytes], lock: threading.Lock) -> None:
        super().__init__(logging.WARNING)
        self.out, self.channel_lock = out, lock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with self.channel_lock:
                write_frame(self.out, ("log", record.levelno, self.format(record)))
        except Exception:  # noqa: BLE001 - the parent is gone; nothing to tell
            pass


def child_main() -> None:
    # interlock shuts the child down by closing the pipe, after exporting what is queued; a Ctrl-C
    # or SIGTERM sent to the whole process group must not cut that short (or print a traceback).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel_in, channel_out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the channel
    lock = threading.Lock()
    logging.getLogger().addHandler(_ForwardLogs(channel_out, lock))
    logging.getLogger().setLevel(logging.WARNING)
    message = read_frame(channel_in)
    if message is None or message[0] != "config":
        return
    config = Otel(**message[1])
    exporter = local_exporter(config, worker=False)

    def stats() -> dict[str, Any]:
        return {"exported": exporter.exported, "health": [(h.what, h.failures) for h in exporter.health]}

    while True:
        message = read_frame(channel_in)
        if message is None or message[0] == "close":
            exporter.close(5.0)
            with lock:
                try:
                    write_frame(channel_out, ("closed", stats()))
                except OSError:
                    pass
            return
        kind, payload = message
        if kind == "calls":
            for data in payload:
                exporter.export_one(from_wire(data))
        elif kind == "flush":
            exporter.flush()
            with lock:
                write_frame(channel_out, ("flushed", payload, stats()))


if __name__ == "__main__":
    child_main()
