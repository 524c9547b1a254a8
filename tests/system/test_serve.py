"""`keysentry serve` as a separate process: curl with the reference pages' bodies,
schemathesis from outside against its OpenAPI document, graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keysentry import KeySentry, RateLimitRule
from keysentry.admin import create_admin_key
from keysentry.server import free_port
from tests.admin.test_app import REFERENCE_000, REFERENCE_001
from tests.conftest import REDIS_URL, require_redis

BIN = Path(sys.executable).parent


@dataclass
class Server:
    base: str
    admin: str
    url: str
    process: subprocess.Popen[bytes]


def wait_until_serving(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(base + "/api-auth/openapi.json", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("keysentry serve did not start") from None
            time.sleep(0.05)


@pytest.fixture(params=["sqlite", pytest.param("postgres+redis", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    env = {**os.environ}
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/serve.db"
    else:
        require_redis()
        url = str(request.getfixturevalue("pg_url"))
        env["KEYSENTRY_LIMITER_URL"] = REDIS_URL
    env["KEYSENTRY_DATABASE_URL"] = url
    with KeySentry(url) as ks:  # as `keysentry admin-key create` would, before serving
        admin = create_admin_key(ks).secret
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keysentry", "serve", "--port", str(port), "--log-level",
         "warning"], env=env, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, process)
        yield Server(base, admin, url, process)
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(20)


def curl(server: Server, method: str, path: str, body: object = None) -> tuple[int, object]:
    command = ["curl", "-sS", "--request", method, "--url", server.base + path,
               "--header", f"Authorization: Bearer {server.admin}",
               "--write-out", "\n%{http_code}"]  # fmt: skip
    if body is not None:
        command += ["--header", "Content-Type: application/json", "--data", json.dumps(body)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    text, status = output.rsplit("\n", 1)
    return int(status), json.loads(text)


def test_reference_examples_with_curl(server: Server) -> None:
    # reference/001 exactly as written: Wacht's own rule refuses permissions with user_id
    status, body = curl(server, "POST", "/api-auth/apps", REFERENCE_001)
    assert status == 422
    assert isinstance(body, dict)
    assert {e["field"] for e in body["errors"]} == {"permissions", "resources"}
    scheme = {"slug": "default-rate-limits", "name": "Default",
              "rules": [{"unit": "minute", "max_requests": 100}]}  # fmt: skip
    assert curl(server, "POST", "/api-auth/rate-limit-schemes", scheme)[0] == 201
    accepted = {k: v for k, v in REFERENCE_001.items() if k not in ("permissions", "resources")}
    status, app = curl(server, "POST", "/api-auth/apps", accepted)
    assert status == 201
    assert isinstance(app, dict)
    assert app["rate_limits"][0]["max_requests"] == 100
    # reference/000: {"name": "string"}
    status, issued = curl(server, "POST", "/api-auth/apps/my-integration/keys", REFERENCE_000)
    assert status == 201
    assert isinstance(issued, dict)
    key = issued["key"]
    check = {"principal": {"type": "api_key", "value": issued["secret"]}, "resource": "/x"}
    status, verdict = curl(server, "POST", "/v1/authz/check", check)
    assert status == 200
    assert isinstance(verdict, dict)
    assert verdict["allowed"] is True
    assert curl(server, "POST", "/api-auth/keys/revoke", {"api_key_id": key["id"]})[0] == 200
    status, verdict = curl(server, "POST", "/v1/authz/check", check)
    assert isinstance(verdict, dict)
    assert verdict["reason"] == "key_revoked"  # at once, in the serving process


def test_the_docs_httpx_example(server: Server) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "http-api.md").read_text()
    match = re.search(r"With httpx:\n\n```python\n(.*?)```", doc, re.S)
    assert match
    code = match.group(1).replace("http://127.0.0.1:8080", server.base)
    with KeySentry(server.url) as ks:
        ks.create_api_auth_app("my-integration", "My App", "sk_live")
    namespace: dict[str, object] = {"ADMIN_KEY": server.admin}
    exec(compile(code, "docs/http-api.md", "exec"), namespace)  # noqa: S102
    issued = namespace["issued"]
    assert isinstance(issued, dict)
    assert issued["secret"].startswith("sk_live_")
    with KeySentry(server.url) as ks:
        assert ks.verify(issued["secret"]).reason == "invalid_key"  # rotated by the example
        assert ks.get_api_key(issued["key"]["id"]).name == "Primary"


def schemathesis(server: Server, cwd: Path, *selection: str) -> subprocess.CompletedProcess[str]:
    checks = ("not_a_server_error,status_code_conformance,content_type_conformance,"
              "response_schema_conformance,response_headers_conformance")  # fmt: skip
    return subprocess.run(
        [str(BIN / "st"), "run", f"{server.base}/api-auth/openapi.json",
         "--header", f"Authorization: Bearer {server.admin}", "--checks", checks,
         "--max-examples", "15", "--seed", "20261123", "--no-color", *selection],
        capture_output=True, text=True, timeout=600, cwd=cwd,  # its cache goes there
    )  # fmt: skip


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_schemathesis_finds_no_5xx_and_no_schema_mismatch(server: Server, tmp_path: Path) -> None:
    # Revoking and rotating go last: the fuzzer finds the admin key's id in the listings and
    # would otherwise lock itself out for the rest of the run.
    keys_routes = "^/api-auth/keys/(revoke|rotate)$"
    for selection in (("--exclude-path-regex", keys_routes),
                      ("--include-path-regex", keys_routes)):  # fmt: skip
        result = schemathesis(server, tmp_path, *selection)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert " passed" in result.stdout
        assert "failed" not in result.stdout.split("SUMMARY")[-1]


def test_sigterm_shuts_down_gracefully_and_writes_usage(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path}/serve.db"
    with KeySentry(database_url) as ks:
        admin = create_admin_key(ks)
    env = {**os.environ, "KEYSENTRY_DATABASE_URL": database_url}
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keysentry", "serve", "--port", str(port)],
        env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, process)
        request = urllib.request.Request(
            f"{base}/api-auth/apps", headers={"Authorization": f"Bearer {admin.secret}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=20)
    # uvicorn finishes the lifespan (keysentry closes its store and limiter there), then
    # re-raises the signal so the exit status says how it ended.
    assert "Application shutdown complete." in log
    assert process.returncode == -signal.SIGTERM
    # the use was pending (usage is written every 10 s): the shutdown wrote it, and the CLI,
    # another process, shows it
    shown = subprocess.run(
        [str(BIN / "keysentry"), "--json", "keys", "show", admin.key.id],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(shown.stdout)["last_used_at"] is not None


@pytest.mark.postgres
def test_workers_share_the_redis_limit(tmp_path: Path, pg_url: str) -> None:
    require_redis()
    import redis

    with KeySentry(pg_url) as ks:
        admin = create_admin_key(ks).secret
        ks.create_rate_limit_scheme("ten", "Ten", [RateLimitRule(unit="hour", max_requests=10)])
        ks.create_api_auth_app("shop", "Shop", "sk_shop", rate_limit_scheme_slug="ten")
        key = ks.create_api_key("shop", "k").secret
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keysentry", "serve", "--port", str(port), "--workers", "2",
         "--database-url", pg_url, "--limiter-url", REDIS_URL, "--log-level", "warning"],
        env={**os.environ, "KEYSENTRY_DATABASE_URL": ""}, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        wait_until_serving(base, process)
        body = json.dumps({"principal": {"type": "api_key", "value": key}}).encode()
        allowed = 0
        for _ in range(25):  # new connections: uvicorn's workers take turns
            request = urllib.request.Request(
                f"{base}/v1/authz/check",
                data=body,
                headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                allowed += json.load(response)["allowed"]
        assert allowed == 10  # one limit across both workers, not ten per worker
        assert client.keys("keysentry:rl:{shop}:*")  # counted on Redis
    finally:
        process.terminate()
        process.wait(20)
        for name in client.scan_iter("keysentry:rl:{shop}:*"):
            client.delete(name)
        client.close()
