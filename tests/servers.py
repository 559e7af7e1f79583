"""Throwaway PostgreSQL and Redis servers for the fleet's tests: Debian's packages (`make servers`),
started on free loopback ports in a temp dir, stopped and started again by tests of an outage.
No mocks of either: these are the real servers (issue 19)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: A cold start on a loaded 2-core machine, not a pace: the wait polls readiness.
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: run `make servers` (Debian's postgresql)")
    return found[-1]


class PostgresServer:
    """One PostgreSQL cluster in `root` (as root: in a directory of its own), trust authentication on
    loopback, fsync off (throwaway)."""

    def __init__(self, root: Path) -> None:
        # PostgreSQL refuses to run as root: as root, the cluster belongs to Debian's `postgres` user,
        # in a directory of its own right under the system temp dir, not in `root`. pytest resets
        # /tmp/pytest-of-root to 0700 whenever a pytest session starts on the machine (a concurrent
        # run, or a test's own pytest subprocess): with the cluster below it, that failed an initdb
        # under way and shut out a running server (its postmaster rechecks its lock file).
        self._as: list[str] = []
        self._owned: Path | None = None
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            root = self._owned = Path(tempfile.mkdtemp(prefix="interlock-postgres-"))
            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        subprocess.run(
            [*self._as, _pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "interlock", "--no-sync"],
            check=True,
            capture_output=True,
        )
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://interlock@127.0.0.1:{self.port}/postgres"

    def database(self, name: str) -> str:
        """A fresh, empty database `name` on this server; its URL."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        return f"postgresql://interlock@127.0.0.1:{self.port}/{name}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [
                _pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "interlock",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off -c max_connections=200"
        subprocess.run(
            [
                *self._as,
                _pg_bin("pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            [*self._as, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )

    def close(self) -> None:
        """Stop it for good: its directory too, where it made its own (as root)."""
        self.stop()
        if self._owned is not None:
            shutil.rmtree(self._owned, ignore_errors=True)


class RedisServer:
    """One redis-server on a free loopback port, nothing persisted (no RDB, no AOF)."""

    def __init__(self, root: Path) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found: run `make servers` (Debian's redis-server)")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--logfile",
                str(self.root / "log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._pong():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.root / 'log').read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING in {START_TIMEOUT} s")
            time.sleep(0.02)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            sock.recv(16)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
