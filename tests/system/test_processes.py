"""Separate processes on one store: a uvicorn server, and the CLI changing keys under it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keysentry import KeySentry
from tests.conftest import REDIS_URL
from tests.system.http import http_status

ROOT = Path(__file__).resolve().parents[2]
SYNC_INTERVAL = 1.0  # the default


def status(port: int, secret: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/whoami")
    if secret:
        request.add_header("Authorization", f"Bearer {secret}")
    return http_status(request, timeout=10)


@contextlib.contextmanager
def uvicorn(tmp_path: Path, env: dict[str, str], workers: int = 1) -> Iterator[int]:
    """Serve tests/servers/shared_db_app.py in a separate process; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.servers.shared_db_app:app",
         "--fd", str(sock.fileno()), "--log-level", "warning", "--workers", str(workers)],
        pass_fds=[sock.fileno()], env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )  # fmt: skip
    sock.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the uvicorn process did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(20)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, str]]:
    url = (
        f"sqlite:///{tmp_path}/shared.db"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    with KeySentry(url) as ks:
        ks.list_api_auth_apps()  # schema first, so the server does not race to create it
    with uvicorn(tmp_path, {"KEYSENTRY_DATABASE_URL": url}) as port:
        yield port, url


def cli(url: str, *argv: str) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "KEYSENTRY_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "keysentry", *argv, "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_cli_revoke_and_rotate_reach_a_running_server(served: tuple[int, str]) -> None:
    port, url = served
    cli(url, "apps", "create", "api", "--name", "API", "--key-prefix", "sk_live")
    first = cli(url, "keys", "create", "api", "--name", "one")
    second = cli(url, "keys", "create", "api", "--name", "two")
    assert status(port, first["secret"]) == 200  # now cached in the server process
    assert status(port, second["secret"]) == 200
    assert status(port) == 401

    cli(url, "keys", "revoke", first["key"]["id"], "--reason", "leaked")
    rotated = cli(url, "keys", "rotate", second["key"]["id"])
    time.sleep(SYNC_INTERVAL + 0.2)  # past the bound, the next request reads the log first
    assert status(port, first["secret"]) == 403
    assert status(port, second["secret"]) == 401  # the old secret
    assert status(port, rotated["secret"]) == 200


@pytest.mark.redis
def test_uvicorn_workers_on_one_redis_admit_exactly_the_limit(
    tmp_path: Path, redis_prefix: str
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    with KeySentry(url) as ks:
        ks.create_rate_limit_scheme("fifty", "Fifty", [
            {"unit": "day", "max_requests": 50, "mode": "per_app"},
        ])  # fmt: skip
        ks.create_api_auth_app(app_slug=redis_prefix.replace(":", "-")[:40], name="API",
                               key_prefix="sk_live", rate_limit_scheme_slug="fifty")  # fmt: skip
        secret = ks.create_api_key(ks.list_api_auth_apps()[0].app_slug, "k").secret
    env = {
        "KEYSENTRY_DATABASE_URL": url,
        "KEYSENTRY_LIMITER_URL": REDIS_URL,
        "TEST_LIMITER_TIMEOUT": "2",
    }  # exactness, not the 100 ms default, is tested here
    day = time.gmtime().tm_yday
    with uvicorn(tmp_path, env, workers=3) as port, ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda _: reply(port, secret), range(200)))
        # The first worker up can take every connection while the others still import;
        # go on until another one answers too (each of its answers must then be a 429:
        # it refuses on the count the others made, in Redis).
        deadline = time.monotonic() + 30
        while len({pid for _, pid in replies}) < 2 and time.monotonic() < deadline:
            replies += pool.map(lambda _: reply(port, secret), range(50))
    if time.gmtime().tm_yday != day:
        pytest.skip("the run crossed midnight UTC, where the daily window turns over")
    statuses = Counter(status for status, _ in replies)
    assert statuses == {200: 50, 429: len(replies) - 50}
    assert len({pid for _, pid in replies}) >= 2  # several workers answered


def reply(port: int, secret: str) -> tuple[int, str]:
    """Status and the pid of the worker that answered."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/whoami")
    request.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.headers["x-worker-pid"]
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers["x-worker-pid"]
