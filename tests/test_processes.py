"""Separate processes on one store: a uvicorn server, and the CLI changing keys under it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysentry import KeySentry

ROOT = Path(__file__).resolve().parent.parent
SYNC_INTERVAL = 1.0  # the default


def status(port: int, secret: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/whoami")
    if secret:
        request.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, str]]:
    url = (
        f"sqlite:///{tmp_path}/shared.db"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    with KeySentry(url) as ks:
        ks.list_api_auth_apps()  # schema first, so the server does not race to create it
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    env = {**os.environ, "KEYSENTRY_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.servers.shared_db_app:app",
         "--fd", str(sock.fileno()), "--log-level", "warning"],
        pass_fds=[sock.fileno()], env=env, cwd=tmp_path,
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
        yield port, url
    finally:
        server.terminate()
        server.wait(10)


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
