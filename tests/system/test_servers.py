"""End to end through real servers on loopback: uvicorn (h11, httptools) and werkzeug.

Requests are written to a socket byte for byte, so the bad inputs reach the server as sent
(HTTP clients would normalise paths or refuse odd headers). Nothing here may answer 500.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from werkzeug.serving import make_server

from keysentry import KeySentry
from tests.adapters.support import flask_app, starlette_app


@dataclass
class Served:
    port: int
    ks: KeySentry
    kind: str


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def _uvicorn(app: object, http: str) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=http, lifespan="off", log_level="warning")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)


def _werkzeug(app: object) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, threaded=True)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.port
    server.shutdown()
    thread.join(10)


@pytest.fixture(params=["uvicorn-h11", "uvicorn-httptools", "werkzeug"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    ks = KeySentry("memory://")
    ks.create_api_auth_app(
        app_slug="internal-api", name="Internal API", key_prefix="sk_live",
        permissions=["users:read", "users:write"], resources=["users/*"],
    )  # fmt: skip
    kind = request.param
    if kind == "werkzeug":
        ports = _werkzeug(flask_app(ks))
    else:
        ports = _uvicorn(starlette_app(ks), kind.removeprefix("uvicorn-"))
    port = next(ports)
    yield Served(port, ks, kind)
    next(ports, None)


def send_raw(port: int, head: bytes) -> Response:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    header_block, _, body = raw.partition(b"\r\n\r\n")
    lines = header_block.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return Response(status, headers, body)


def request(
    port: int, method: str, path: str, headers: list[tuple[str, bytes]] | None = None
) -> Response:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers or []]
    return send_raw(port, b"\r\n".join(lines) + b"\r\n\r\n")


def auth(secret: str) -> list[tuple[str, bytes]]:
    return [("Authorization", f"Bearer {secret}".encode())]


def test_behaviour_over_real_http(served: Served) -> None:
    ks, port = served.ks, served.port
    issued = ks.create_api_key("internal-api", "k", permissions=["users:read"])
    ok = request(port, "GET", "/users/42", auth(issued.secret))
    assert ok.status == 200
    assert issued.key.id.encode() in ok.body
    missing = request(port, "GET", "/users/42")
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.body.startswith(b'{"errors":[')
    assert request(port, "POST", "/users/42", auth(issued.secret)).status == 403
    assert request(port, "GET", "/orders/1", auth(issued.secret)).status == 403
    assert request(port, "GET", "/health").status == 200
    ks.revoke_api_key(issued.key.id)
    revoked = request(port, "GET", "/users/42", auth(issued.secret))
    assert revoked.status == 403
    assert b'"reason":"key_revoked"' in revoked.body
    other = ks.create_api_key("internal-api", "k2")
    rotated = ks.rotate_api_key(other.key.id)
    assert request(port, "GET", "/users/1", auth(other.secret)).status == 401
    assert request(port, "GET", "/users/1", auth(rotated.secret)).status == 200


def test_bad_inputs_over_real_http_never_500(served: Served) -> None:
    ks, port = served.ks, served.port
    secret = ks.create_api_key("internal-api", "k").secret
    bearer = f"Bearer {secret}".encode()
    broken = bearer[:-1] + (b"1" if bearer.endswith(b"0") else b"0")  # always a change
    cases: list[tuple[str, str, list[tuple[str, bytes]], set[int]]] = [
        ("two authorization headers", "/users/1",
         [("Authorization", bearer), ("Authorization", bearer)], {401}),
        ("lowercase scheme", "/users/1", [("Authorization", b"bearer " + secret.encode())], {200}),
        ("tabs", "/users/1", [("Authorization", b"Bearer\t \t" + secret.encode())], {200}),
        ("latin-1 byte", "/users/1", [("Authorization", bearer + b"\xe9")], {401}),
        # uvicorn refuses a NUL byte itself; werkzeug hands it over and we refuse it
        ("nul byte", "/users/1", [("Authorization", b"Bearer \xff\xfe\x00")],
         {401} if served.kind == "werkzeug" else {400}),
        ("bad checksum", "/users/1", [("Authorization", broken)], {401}),
        ("dot-dot", "/a/../users/1", auth(secret), {400}),
        # werkzeug's server collapses "//" before the app: router and check both see /users/1
        ("empty segment", "//users/1", auth(secret),
         {200} if served.kind == "werkzeug" else {400}),
        # every server decodes %2F before the app: check and router both see /users/1
        ("encoded slash", "/users%2F1", auth(secret), {200}),
        ("head", "/users/1", auth(secret), {200}),
        # the preflight reaches the app: Flask answers OPTIONS itself, Starlette's route 405s
        ("preflight", "/users/1",
         [("Origin", b"https://x.example"), ("Access-Control-Request-Method", b"GET")],
         {200} if served.kind == "werkzeug" else {405}),
    ]  # fmt: skip
    for name, path, headers, expected in cases:
        method = "HEAD" if name == "head" else "OPTIONS" if name == "preflight" else "GET"
        status = request(port, method, path, headers).status
        assert status in expected, (served.kind, name, status)
    # A 1 MB header: h11 and werkzeug refuse it themselves; httptools hands it to us
    huge = request(port, "GET", "/users/1", [("Authorization", b"Bearer " + b"a" * 1_000_000)])
    expected_huge = {"uvicorn-h11": 400, "uvicorn-httptools": 401, "werkzeug": 431}
    assert huge.status == expected_huge[served.kind]


def test_two_rules_on_two_endpoints_over_real_http(served: Served) -> None:
    # a scheme of two rules on different endpoints, through a real server:
    # 429 exactly at each limit, the headers on every verified answer, and a client that
    # waits what Retry-After says is admitted
    ks, port = served.ks, served.port
    ks.create_rate_limit_scheme("two", "Two", [
        {"unit": "second", "duration": 2, "max_requests": 3, "endpoints": ["GET /users/*"]},
        {"unit": "second", "duration": 2, "max_requests": 2, "endpoints": ["/orders/*"]},
    ])  # fmt: skip
    ks.update_api_auth_app("internal-api", rate_limit_scheme_slug="two", resources=[])
    key = auth(ks.create_api_key("internal-api", "k").secret)
    time.sleep(2 - time.time() % 2 if time.time() % 2 > 1.5 else 0)  # not at a window's end
    users = [request(port, "GET", "/users/1", key) for _ in range(4)]
    orders = [request(port, "GET", "/orders/1", key) for _ in range(3)]
    assert [r.status for r in users] == [200, 200, 200, 429]
    assert [r.status for r in orders] == [200, 200, 429]  # its own counter
    for reply in users + orders:
        assert {"ratelimit", "ratelimit-policy", "x-ratelimit-limit",
                "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(reply.headers)  # fmt: skip
    assert users[0].headers["ratelimit-policy"].endswith(";q=3;w=2")
    assert [r.headers["x-ratelimit-remaining"] for r in users] == ["2", "1", "0", "0"]
    refused = users[-1]
    assert b'"reason":"rate_limited"' in refused.body
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 4
    time.sleep(wait)
    assert request(port, "GET", "/users/1", key).status == 200


def test_concurrent_requests_over_an_expiring_cache_are_all_answered() -> None:
    # the key's cached entry expires every 50 ms, so bursts of cold reads keep coming: the
    # first caller of each reads while the others wait on the event loop (SharedReads)
    ks = KeySentry("memory://", cache_ttl=0.05, sync_interval=0.05)
    ks.create_api_auth_app(app_slug="internal-api", name="Internal API", key_prefix="sk_live",
                           permissions=["users:read"], resources=["users/*"])  # fmt: skip
    secret = ks.create_api_key("internal-api", "k", permissions=["users:read"]).secret
    finds = []
    find_candidates = ks.store.find_candidates

    def counted(prefix: str, suffix: str) -> object:
        finds.append(prefix)
        return find_candidates(prefix, suffix)

    ks.cache.store.find_candidates = counted  # type: ignore[method-assign]
    statuses: list[int] = []
    ports = _uvicorn(starlette_app(ks), "httptools")
    port = next(ports)

    errors: list[BaseException] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        deadline = time.monotonic() + 1.5
        try:
            while time.monotonic() < deadline:
                headers = {"Authorization": f"Bearer {secret}"}
                connection.request("GET", "/users/1", headers=headers)
                answer = connection.getresponse()
                answer.read()
                statuses.append(answer.status)
        except Exception as exc:  # a waiter never woken: the read times out
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    next(ports, None)
    assert errors == []
    assert statuses
    assert set(statuses) == {200}
    assert len(finds) > 1  # the entry did expire and was read again
