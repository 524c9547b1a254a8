"""Our own ``redis-server`` and ``postgres``, on spare ports, for tests that stop them by pid.

The shared services on 6379 and 5432 are never touched. When a server binary is missing the
test skips, or fails when ``KEYSENTRY_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from keysentry.server import free_port
from tests.conftest import REQUIRE_SERVICES


def _missing(message: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"KEYSENTRY_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)


def _wait_for_port(port: int, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"our {what} did not start on port {port}")


class OwnRedis:
    """A ``redis-server`` of our own, keeping nothing on disk."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _missing("redis-server is not on PATH")
        self.binary = str(binary)
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(self.port, "redis-server")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL, by pid
        self.process.wait(timeout=10)

    def stop_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class OwnPostgres:
    """A throw-away PostgreSQL cluster (``initdb``, trust auth) run by ``postgres`` directly,
    so :meth:`stop` signals the server itself by its pid. As root, it runs as the
    ``postgres`` user, which PostgreSQL requires."""

    def __init__(self) -> None:
        bindir = _postgres_bin()
        if bindir is None:
            _missing("PostgreSQL's initdb/postgres binaries are not installed")
        assert bindir is not None
        self.bindir = bindir
        # not under pytest's tmp_path: its parents are private to root
        self.directory = Path(tempfile.mkdtemp(prefix="keysentry-pg-"))
        self.data = self.directory / "data"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as = {"user": "postgres", "group": "postgres"}
            shutil.chown(self.directory, "postgres", "postgres")
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, **self._as,
        )  # fmt: skip
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.directory / "postgres.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.directory), "-c", "fsync=off"],
            stdout=log, stderr=log, **self._as,
        )  # fmt: skip
        log.close()
        _wait_for_port(self.port, "postgres")
        import psycopg  # accepting TCP is not yet accepting queries

        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown by the server's pid: clients are disconnected at once."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)

    def remove(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
