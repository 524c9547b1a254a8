"""Our own ``redis-server``, ``postgres`` and ``mariadbd``, on spare ports, for tests that stop
them by pid.

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

    def __init__(self, directory: Path, *extra: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _missing("redis-server is not on PATH")
        self.binary = str(binary)
        self.directory = directory
        self.extra = extra
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), *self.extra],
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


def _cluster_port() -> int:
    # a cluster node also listens on port + 10000 (the cluster bus)
    while True:
        port = free_port()
        if port + 10000 < 65536:
            try:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue


def _redis_cli(*args: str) -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        _missing("redis-cli is not on PATH")
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip
    return done.stdout + done.stderr


class OwnRedisCluster:
    """Three masters of our own (no replicas), ``cluster-require-full-coverage no`` so that
    a killed master stops only its own slots."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes = [
            OwnRedis(directory / f"node{i}", "--cluster-enabled", "yes",
                     "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
                     "--cluster-require-full-coverage", "no", port=_cluster_port())
            for i in range(masters)
        ]  # fmt: skip
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        out = _redis_cli("--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                         "--cluster-replicas", "0", "--cluster-yes")  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [_redis_cli("-p", str(n.port), "cluster", "info") for n in self.nodes]
            if all("cluster_state:ok" in state for state in states):
                return
            time.sleep(0.1)
        raise RuntimeError(f"our Redis Cluster did not come up: {out}")

    def master_of(self, slot: int) -> OwnRedis:
        """The node serving *slot*."""
        import redis

        client = redis.Redis(port=self.nodes[0].port)
        try:
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        finally:
            client.close()
        raise LookupError(slot)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop_if_running()


class OwnSentinels:
    """A primary, a replica and three sentinels of our own, watching service ``ks``."""

    def __init__(self, directory: Path) -> None:
        self.primary = OwnRedis(directory / "primary")
        self.replica = OwnRedis(directory / "replica", "--replicaof", "127.0.0.1",
                                str(self.primary.port))  # fmt: skip
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.directory = directory
        self.sentinels: list[subprocess.Popen[bytes]] = []
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/ks"

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        binary = shutil.which("redis-server")
        assert binary is not None
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor ks 127.0.0.1 {self.primary.port} 2\n"
                "sentinel down-after-milliseconds ks 1000\n"
                "sentinel failover-timeout ks 5000\n"
                "sentinel parallel-syncs ks 1\n"
            )
            self.sentinels.append(subprocess.Popen(
                [binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        for port in self.sentinel_ports:
            _wait_for_port(port, "redis-sentinel")
        deadline = time.monotonic() + 30  # the replica has synced, every sentinel knows it
        while time.monotonic() < deadline:
            info = _redis_cli("-p", str(self.replica.port), "info", "replication")
            known = [_redis_cli("-p", str(p), "sentinel", "replicas", "ks")
                     for p in self.sentinel_ports]  # fmt: skip
            if "master_link_status:up" in info and all(str(self.replica.port) in k
                                                       for k in known):  # fmt: skip
                return
            time.sleep(0.2)
        raise RuntimeError("our sentinels did not come up")

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        self.primary.stop_if_running()
        self.replica.stop_if_running()


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


class OwnMariaDB:
    """A throw-away MariaDB (``mariadb-install-db``; ``--skip-grant-tables``, so root needs
    no password) run by ``mariadbd`` directly, so :meth:`stop` kills the server by its pid.
    As root, it runs as the ``mysql`` user."""

    def __init__(self) -> None:
        self.server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
        install = shutil.which("mariadb-install-db")
        if self.server is None or install is None:
            _missing("MariaDB's mariadbd/mariadb-install-db are not installed")
        assert self.server is not None
        assert install is not None
        self.directory = Path(tempfile.mkdtemp(prefix="keysentry-mariadb-"))
        self.data = self.directory / "data"
        self._user: list[str] = []
        if os.geteuid() == 0:
            self._user = ["--user=mysql"]
            shutil.chown(self.directory, "mysql", "mysql")
        subprocess.run(
            [install, "--no-defaults", f"--datadir={self.data}", *self._user,
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True,
        )  # fmt: skip
        self.port = free_port()
        self.url = f"mysql://root@127.0.0.1:{self.port}/test"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.server is not None
        log = open(self.directory / "mariadb.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [self.server, "--no-defaults", f"--datadir={self.data}", *self._user,
             f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--socket={self.directory / 'mariadb.sock'}", "--skip-grant-tables",
             "--skip-log-bin"],
            stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        _wait_for_port(self.port, "mariadb")
        import pymysql  # accepting TCP is not yet accepting queries

        deadline = time.monotonic() + 15
        while True:
            try:
                conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root",
                                       connect_timeout=1)  # fmt: skip
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with conn, conn.cursor() as cursor:
            cursor.execute("CREATE DATABASE IF NOT EXISTS test")

    def stop(self) -> None:
        """Killed by its pid (SIGKILL): no goodbye to its clients."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def remove(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
