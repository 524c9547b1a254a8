"""The nginx configuration of docs/http-api.md, run by a real nginx on loopback in front of
keysentry's forward-auth endpoint and a small upstream API.

Skips (with the reason) where no nginx binary is installed: nginx is not one of the services
this project requires (Debian: apt-get install nginx-light).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keysentry import KeySentry, RateLimitRule
from keysentry.admin import create_admin_app
from keysentry.server import free_port, running

DOC = Path(__file__).parents[2] / "docs" / "http-api.md"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def documented_server_block() -> str:
    match = re.search(r"```nginx\n(.*?)```", DOC.read_text(), re.S)
    assert match, "docs/http-api.md has no nginx block"
    return match.group(1)


async def upstream(request: Request) -> JSONResponse:
    # what the API behind nginx sees: keysentry's identity headers, set by nginx
    return JSONResponse({"path": request.url.path,
                         "key_id": request.headers.get("x-keysentry-key-id"),
                         "app_slug": request.headers.get("x-keysentry-app-slug")})  # fmt: skip


Reply = tuple[int, list[tuple[str, str]], dict[str, object]]


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    """Every value of header *name*, in order: a header sent twice shows twice."""
    return [value for key, value in headers if key == name]


class Nginx:
    def __init__(self, base: str, ks: KeySentry) -> None:
        self.base = base
        self.ks = ks

    def get(self, path: str, key: str | None = None, **headers: str) -> Reply:
        request = urllib.request.Request(self.base + path, headers=headers)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, head, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, head, body = error.code, error.headers, error.read()
        raw = [(k.lower(), v) for k, v in head.items()]  # repeated headers stay repeated
        return status, raw, json.loads(body) if body else {}


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    assert NGINX is not None
    ks = KeySentry("memory://")
    keysentry_port, api_port, nginx_port = free_port(), free_port(), free_port()
    block = (documented_server_block()
             .replace("127.0.0.1:8080", f"127.0.0.1:{keysentry_port}")
             .replace("127.0.0.1:9000", f"127.0.0.1:{api_port}")
             .replace("127.0.0.1:8000", f"127.0.0.1:{nginx_port}"))  # fmt: skip
    for name in ("client", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / name).mkdir()
    user = "user root root;" if os.geteuid() == 0 else ""
    config = tmp_path / "nginx.conf"
    config.write_text(f"""
        {user}
        worker_processes 1;
        daemon off;
        pid {tmp_path}/nginx.pid;
        error_log {tmp_path}/error.log warn;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {tmp_path}/client;
            proxy_temp_path {tmp_path}/proxy;
            fastcgi_temp_path {tmp_path}/fastcgi;
            uwsgi_temp_path {tmp_path}/uwsgi;
            scgi_temp_path {tmp_path}/scgi;
            {block}
        }}
    """)
    api = Starlette(routes=[Route("/{path:path}", upstream, methods=["GET", "POST"])])
    with running(create_admin_app(ks), "127.0.0.1", keysentry_port), \
            running(api, "127.0.0.1", api_port):  # fmt: skip
        process = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(config)],
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{nginx_port}/", timeout=1)
                except urllib.error.HTTPError:
                    break  # nginx answered (401: no key)
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        _, log = process.communicate()
                        raise RuntimeError(f"nginx did not start: {log}") from None
                    time.sleep(0.05)
            yield Nginx(f"http://127.0.0.1:{nginx_port}", ks)
        finally:
            process.terminate()
            process.communicate(timeout=10)
            ks.close()


def test_nginx_auth_request_passes_and_refuses_as_the_middleware_would(nginx: Nginx) -> None:
    ks = nginx.ks
    ks.create_rate_limit_scheme("three", "Three", [RateLimitRule(unit="minute", max_requests=3)])
    ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["users:*"],
                           rate_limit_scheme_slug="three")  # fmt: skip
    reader = ks.create_api_key("shop", "reader", permissions=["users:read"])
    key = reader.secret

    status, headers, body = nginx.get("/users/42", key, **{"X-Keysentry-Key-Id": "forged"})
    assert status == 200
    assert body == {"path": "/users/42", "key_id": reader.key.id, "app_slug": "shop"}

    status, headers, body = nginx.get("/users/42")
    assert status == 401
    assert values(headers, "www-authenticate") == ["Bearer"]  # once, not once per layer
    assert body["errors"][0]["reason"] == "missing_key"  # type: ignore[index]

    status, headers, body = nginx.get("/admin/users", key)  # needs users:write
    assert status == 403
    assert body["errors"][0]["reason"] == "permission_denied"  # type: ignore[index]
    assert values(headers, "www-authenticate") == []

    assert nginx.get("/users/1", key)[0] == 200
    assert nginx.get("/users/1", key)[0] == 200  # the third this minute
    status, headers, body = nginx.get("/users/1", key)
    assert status == 429  # not the 500 nginx makes of a 429 from auth_request
    [retry_after] = values(headers, "retry-after")
    assert int(retry_after) > 0
    assert body["errors"][0]["reason"] == "rate_limited"  # type: ignore[index]

    other = ks.create_api_key("shop", "other", permissions=["users:read"])
    assert nginx.get("/users/1", other.secret)[0] == 200
    ks.revoke_api_key(other.key.id)
    status, _, body = nginx.get("/users/1", other.secret)
    assert status == 403
    assert body["errors"][0]["reason"] == "key_revoked"  # type: ignore[index]
