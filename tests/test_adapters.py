"""One behaviour table through the ASGI middleware and the WSGI middleware (STYLE.md 22)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client

from keysentry import ConfigurationError, KeySentry
from keysentry.asgi import KeySentryMiddleware
from keysentry.core.keys import generate_key
from keysentry.flask import current_api_key
from keysentry.testing import FakeClock
from keysentry.wsgi import KeySentryWSGIMiddleware

PERMISSIONS = {"GET /users/*": ["users:read"], "POST /users/*": ["users:write"]}


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


Call = Callable[..., Reply]


def identity_json(identity: Any) -> dict[str, Any]:
    return {"key_id": identity.key_id, "app_slug": identity.app_slug,
            "permissions": list(identity.permissions)}  # fmt: skip


def starlette_app(ks: KeySentry, **options: Any) -> Starlette:
    async def user(request: Request) -> JSONResponse:
        return JSONResponse(identity_json(request.state.api_key))

    @requires("users:read")
    async def guarded(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.user.display_name})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[
        Route("/users/{user_id}", user, methods=["GET", "POST", "HEAD"]),
        Route("/orders/{order_id}", user),
        Route("/guarded/users/1", guarded),
        Route("/health", health),
    ])  # fmt: skip
    app.add_middleware(
        KeySentryMiddleware, sentry=ks, exclude=["/health"], permissions=PERMISSIONS,
        api_key_header="X-API-Key", read_authorization=True, **options,
    )  # fmt: skip
    return app


def flask_app(ks: KeySentry, **options: Any) -> Flask:
    app = Flask(__name__)

    @app.route("/users/<user_id>", methods=["GET", "POST", "HEAD"])
    @app.route("/orders/<user_id>")
    def user(user_id: str) -> Any:
        return jsonify(identity_json(current_api_key))

    @app.route("/health")
    def health() -> str:
        return "ok"

    app.wsgi_app = KeySentryWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, sentry=ks, exclude=["/health"], permissions=PERMISSIONS,
        api_key_header="X-API-Key", read_authorization=True, **options,
    )  # fmt: skip
    return app


def starlette_decorated(ks: KeySentry) -> Starlette:
    @ks.require("users:read")
    async def get_user(request: Request) -> JSONResponse:
        return JSONResponse(identity_json(request.state.api_key))

    @ks.require("users:write")
    def post_user(request: Request) -> JSONResponse:  # a sync handler
        return JSONResponse(identity_json(request.state.api_key))

    @ks.require()
    async def order(request: Request) -> JSONResponse:
        return JSONResponse(identity_json(request.state.api_key))

    return Starlette(routes=[
        Route("/users/{user_id}", get_user, methods=["GET", "HEAD"]),
        Route("/users/{user_id}", post_user, methods=["POST"]),
        Route("/orders/{order_id}", order),
    ])  # fmt: skip


def flask_decorated(ks: KeySentry) -> Flask:
    app = Flask(__name__)

    @app.route("/users/<user_id>", methods=["GET", "HEAD"])
    @ks.require("users:read")
    def get_user(user_id: str) -> Any:
        return jsonify(identity_json(current_api_key))

    @app.post("/users/<user_id>")
    @ks.require("users:write")
    def post_user(user_id: str) -> Any:
        return jsonify(identity_json(current_api_key))

    @app.route("/orders/<order_id>")
    @ks.require()
    def order(order_id: str) -> Any:
        return jsonify(identity_json(current_api_key))

    return app


def fastapi_decorated(ks: KeySentry) -> Any:
    from fastapi import Depends, FastAPI

    from keysentry.core.decision import Identity
    from keysentry.fastapi import install

    app = FastAPI()
    install(app)

    @app.api_route("/users/{user_id}", methods=["GET", "HEAD"])
    async def get_user(
        user_id: str,
        key: Identity = Depends(ks.depends("users:read")),  # noqa: B008
    ) -> Any:
        return identity_json(key)

    @app.post("/users/{user_id}")
    @ks.require("users:write")
    def post_user(user_id: str, request: Request) -> Any:  # sync, asks for the Request
        return identity_json(request.state.api_key)

    @app.get("/orders/{order_id}")
    @ks.require()
    async def order(order_id: str) -> Any:  # does not ask for the Request
        return {"order": order_id}

    return app


def asgi_caller(app: Any, peer: str = "testclient") -> Iterator[Call]:
    with TestClient(app, client=(peer, 50000)) as client:

        def asgi(method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
            raw = {k: v.encode("latin-1") for k, v in (headers or {}).items()}
            r = client.request(method, path, headers=raw)
            is_json = r.headers.get("content-type", "").startswith("application/json")
            body = r.json() if r.content and is_json else {"text": r.text}
            return Reply(r.status_code, body, dict(r.headers))

        yield asgi


def wsgi_caller(app: Flask, peer: str = "127.0.0.1") -> Call:
    client = Client(app)

    def wsgi(method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
        r = client.open(path, method=method, headers=headers or {},
                        environ_base={"REMOTE_ADDR": peer})  # fmt: skip
        data = r.get_data()
        is_json = (r.headers.get("content-type") or "").startswith("application/json")
        body = json.loads(data) if data and is_json else {"text": data.decode()}
        return Reply(r.status_code, body, {k.lower(): v for k, v in r.headers.items()})

    return wsgi


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ks(clock: FakeClock) -> KeySentry:
    sentry = KeySentry("memory://", clock=clock)
    sentry.create_api_auth_app(
        app_slug="internal-api", name="Internal API", key_prefix="sk_live",
        permissions=["users:read", "users:write"], resources=["users/*"],
    )  # fmt: skip
    return sentry


@pytest.fixture(params=["asgi", "wsgi", "require-starlette", "require-flask", "fastapi-depends"])
def call(request: pytest.FixtureRequest, ks: KeySentry) -> Iterator[Call]:
    """The same app protected five ways: each behaviour test runs through all of them."""
    kind = request.param
    if kind == "wsgi":
        yield wsgi_caller(flask_app(ks))
    elif kind == "require-flask":
        yield wsgi_caller(flask_decorated(ks))
    else:
        app = {"asgi": starlette_app, "require-starlette": starlette_decorated,
               "fastapi-depends": fastapi_decorated}[kind](ks)  # fmt: skip
        yield from asgi_caller(app)


@pytest.fixture(params=["asgi", "wsgi"])
def mw_call(request: pytest.FixtureRequest, ks: KeySentry) -> Iterator[Call]:
    """Only the middlewares: options the decorator does not have."""
    if request.param == "wsgi":
        yield wsgi_caller(flask_app(ks))
    else:
        yield from asgi_caller(starlette_app(ks))


def refused_raw(ks: KeySentry, scope: dict[str, Any], incoming: dict[str, Any]) -> list[Any]:
    """Call the ASGI middleware with a hand-built scope; return what it sent. The app behind
    it fails the test if reached."""
    import anyio

    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not be reached")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return incoming

    anyio.run(KeySentryMiddleware(app, sentry=ks), scope, receive, send)
    return sent


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def reason(reply: Reply) -> str:
    return str(reply.body["errors"][0]["reason"])


# ------------------------------------------------------------------- the table
def test_valid_key_gets_200_with_its_identity(call: Call, ks: KeySentry) -> None:
    issued = ks.create_api_key("internal-api", "k", permissions=["users:read"])
    reply = call("GET", "/users/42", bearer(issued.secret))
    assert reply.status == 200
    assert reply.body == {"key_id": issued.key.id, "app_slug": "internal-api",
                          "permissions": ["users:read"]}  # fmt: skip


def test_missing_key_gets_401_with_www_authenticate(call: Call) -> None:
    reply = call("GET", "/users/42")
    assert (reply.status, reason(reply)) == (401, "missing_key")
    assert reply.headers["www-authenticate"] == "Bearer"
    assert reply.body == {"errors": [{"message": reply.body["errors"][0]["message"],
                                      "code": 401, "reason": "missing_key"}]}  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "method", "path", "expected"),
    [
        pytest.param("revoke", "GET", "/users/1", "key_revoked", id="revoked"),
        pytest.param("expire", "GET", "/users/1", "key_expired", id="expired"),
        pytest.param("delete_app", "GET", "/users/1", "app_disabled", id="app-deleted"),
        pytest.param("disable_app", "GET", "/users/1", "app_disabled", id="app-disabled"),
        pytest.param(None, "POST", "/users/1", "permission_denied", id="missing-permission"),
        pytest.param(None, "GET", "/orders/1", "resource_denied", id="outside-resources"),
    ],
)
def test_403_table(
    call: Call,
    ks: KeySentry,
    clock: FakeClock,
    setup: str | None,
    method: str,
    path: str,
    expected: str,
) -> None:
    expires = datetime.fromtimestamp(clock() + 60, UTC)
    issued = ks.create_api_key("internal-api", "k", permissions=["users:read"], expires_at=expires)
    assert call("GET", "/users/1", bearer(issued.secret)).status == 200  # cached now
    if setup == "revoke":
        ks.revoke_api_key(issued.key.id, reason="leaked")
    elif setup == "expire":
        clock.advance(60)
    elif setup == "delete_app":
        ks.delete_api_auth_app("internal-api")
    elif setup == "disable_app":
        ks.update_api_auth_app("internal-api", is_active=False)
    reply = call(method, path, bearer(issued.secret))
    assert (reply.status, reason(reply)) == (403, expected)
    assert "www-authenticate" not in reply.headers


# ------------------------------------------------------------------ bad input
def test_probes_without_the_secret_all_get_the_same_401(call: Call, ks: KeySentry) -> None:
    issued = ks.create_api_key("internal-api", "k")
    real = issued.secret
    one_char_off = real[:10] + ("A" if real[10] != "A" else "B") + real[11:]
    replies = [
        call("GET", "/users/1", bearer("sk_live_" + "a" * 38)),  # bad checksum
        call("GET", "/users/1", bearer(one_char_off)),  # a real key with one character changed
        call("GET", "/users/1", bearer("sk_live_nope")),
        call("GET", "/users/1", {"Authorization": "Bearer"}),
    ]
    assert {r.status for r in replies} == {401}
    assert all(r.body == replies[0].body for r in replies)
    assert all(r.headers["www-authenticate"] == replies[0].headers["www-authenticate"]
               for r in replies)  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"Authorization": "bearer {k}"}, 200, id="lowercase-scheme"),
        pytest.param({"Authorization": "BEARER {k}"}, 200, id="uppercase-scheme"),
        pytest.param({"Authorization": "Bearer \t {k}"}, 200, id="tabs-and-spaces"),
        pytest.param({"Authorization": "{k}"}, 200, id="bare-key"),
        pytest.param({"Authorization": "Bearer {k}\u00e9"}, 401, id="latin-1"),
        pytest.param({"Authorization": "Bearer " + "a" * 1_000_000}, 401, id="one-megabyte"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, 401, id="basic"),
    ],
)  # fmt: skip
def test_header_variants(call: Call, ks: KeySentry, headers: dict[str, str], status: int) -> None:
    secret = ks.create_api_key("internal-api", "k").secret
    filled = {k: v.replace("{k}", secret) for k, v in headers.items()}
    assert call("GET", "/users/1", filled).status == status


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"X-API-Key": "{k}"}, 200, id="x-api-key"),
        pytest.param({"Authorization": "Bearer {k}", "X-API-Key": "{k}"}, 200, id="both-agree"),
        pytest.param({"Authorization": "Bearer {k}", "X-API-Key": "sk_live_x"}, 401,
                     id="both-disagree"),
    ],
)  # fmt: skip
def test_x_api_key_header(
    mw_call: Call, ks: KeySentry, headers: dict[str, str], status: int
) -> None:
    secret = ks.create_api_key("internal-api", "k").secret
    filled = {k: v.replace("{k}", secret) for k, v in headers.items()}
    assert mw_call("GET", "/users/1", filled).status == status


@pytest.mark.parametrize("path", ["/users/../users/1", "/users//1", "/users/./1", "/users/.."])
def test_dot_and_empty_segments_are_400_in_both_middlewares(ks: KeySentry, path: str) -> None:
    # Real clients normalise such paths away, so the scope/environ is built by hand: this is
    # what a server passes on when a client sends the raw path.
    secret = ks.create_api_key("internal-api", "k").secret
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "",
             "headers": [(b"authorization", f"Bearer {secret}".encode())]}  # fmt: skip
    sent = refused_raw(ks, scope, {"type": "http.request", "body": b""})
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["errors"][0]["reason"] == "invalid_path"

    statuses: list[str] = []
    wsgi = KeySentryWSGIMiddleware(lambda e, s: [b"app reached"], sentry=ks)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path,
               "HTTP_AUTHORIZATION": f"Bearer {secret}"}  # fmt: skip
    body = b"".join(wsgi(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["400 Bad Request"]
    assert json.loads(body)["errors"][0]["reason"] == "invalid_path"


def test_head_is_get_and_has_no_body(call: Call, ks: KeySentry) -> None:
    secret = ks.create_api_key("internal-api", "k", permissions=["users:read"]).secret
    assert call("HEAD", "/users/1", bearer(secret)).status == 200
    refused = call("HEAD", "/users/1")
    assert refused.status == 401
    assert refused.body == {"text": ""}


def test_cors_preflight_passes_without_a_key(mw_call: Call) -> None:
    preflight = {"Origin": "https://example.com", "Access-Control-Request-Method": "GET"}
    assert mw_call("OPTIONS", "/users/1", preflight).status in (200, 405)  # the app's answer
    assert mw_call("OPTIONS", "/users/1", {"Origin": "https://example.com"}).status == 401


def test_excluded_paths_pass_without_a_key(mw_call: Call) -> None:
    assert mw_call("GET", "/health").status == 200


def test_revoke_then_request_in_the_same_process_is_refused_at_once(
    call: Call, ks: KeySentry
) -> None:
    for _ in range(50):
        issued = ks.create_api_key("internal-api", "k")
        assert call("GET", "/users/1", bearer(issued.secret)).status == 200
        ks.revoke_api_key(issued.key.id)
        assert call("GET", "/users/1", bearer(issued.secret)).status == 403


def test_rotate_old_secret_401_new_secret_200(call: Call, ks: KeySentry) -> None:
    issued = ks.create_api_key("internal-api", "k")
    assert call("GET", "/users/1", bearer(issued.secret)).status == 200
    rotated = ks.rotate_api_key(issued.key.id)
    assert call("GET", "/users/1", bearer(issued.secret)).status == 401
    assert call("GET", "/users/1", bearer(rotated.secret)).status == 200


def test_unreachable_store_is_503_never_500() -> None:
    ks = KeySentry("postgresql://postgres@127.0.0.1:1/test")  # nothing listens on port 1
    well_formed = generate_key("sk_live").secret
    malformed = "sk_live_" + "a" * 32 + "000000"
    with TestClient(starlette_app(ks)) as client:
        assert client.get("/users/1", headers=bearer(malformed)).status_code == 401
        r = client.get("/users/1", headers=bearer(well_formed))
        assert (r.status_code, r.json()["errors"][0]["reason"]) == (503, "unavailable")
    assert Client(flask_app(ks)).get("/users/1", headers=bearer(well_formed)).status_code == 503
    ks.close()


# ------------------------------------------------------------- ASGI specifics
def test_starlette_requires_sees_glob_permissions(ks: KeySentry) -> None:
    ks.create_api_auth_app(app_slug="wide", name="W", key_prefix="sk_w", permissions=["users:*"])
    secret = ks.create_api_key("wide", "k").secret
    with TestClient(starlette_app(ks)) as client:
        r = client.get("/guarded/users/1", headers=bearer(secret))
        assert r.json() == {"user": "k"}


def test_lifespan_passes_untouched(ks: KeySentry) -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        message = await receive()
        events.append(message["type"])
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        events.append(message["type"])
        await send({"type": "lifespan.shutdown.complete"})

    with TestClient(KeySentryMiddleware(app, sentry=ks)):
        pass
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_app_shutdown_writes_pending_usage(ks: KeySentry) -> None:
    ks.create_api_auth_app(
        app_slug="shop", name="Shop", key_prefix="sk_shop", permissions=["users:read"]
    )
    issued = ks.create_api_key("shop", "k")
    with TestClient(starlette_app(ks)) as client:
        assert client.get("/users/7", headers=bearer(issued.secret)).status_code == 200
        assert ks.get_api_key(issued.key.id).last_used_at is None  # pending, 10 s interval
    assert ks.get_api_key(issued.key.id).last_used_at is not None  # the lifespan wrote it


def test_websocket_handshake_is_verified_before_accept(ks: KeySentry) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.testclient import WebSocketDenialResponse
    from starlette.websockets import WebSocket

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"key": websocket.state.api_key.key_id})
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", ws)])
    app.add_middleware(KeySentryMiddleware, sentry=ks)
    ks.create_api_auth_app(app_slug="socket", name="S", key_prefix="sk_ws")  # no resource limits
    issued = ks.create_api_key("socket", "k")
    with TestClient(app) as client:
        with client.websocket_connect("/ws", headers=bearer(issued.secret)) as conn:
            assert conn.receive_json() == {"key": issued.key.id}
        # TestClient offers the websocket.http.response extension: a real 401 with our body
        with pytest.raises(WebSocketDenialResponse) as info, client.websocket_connect("/ws"):
            pass
        assert info.value.status_code == 401
        assert info.value.json()["errors"][0]["reason"] == "missing_key"


def test_websocket_without_the_denial_extension_is_closed_with_1008(ks: KeySentry) -> None:
    scope = {"type": "websocket", "path": "/ws", "headers": [], "extensions": {}}
    sent = refused_raw(ks, scope, {"type": "websocket.connect"})
    assert sent == [{"type": "websocket.close", "code": 1008}]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"permissions": {"get /x": ["a"]}}, id="method-case"),
        pytest.param({"permissions": {"GET x": ["a"]}}, id="path-without-slash"),
        pytest.param({"permissions": {"GET /x": ["a b"]}}, id="bad-permission"),
        pytest.param({"exclude": ["health"]}, id="exclude-not-a-path"),
    ],
)
def test_bad_configuration_fails_at_construction(ks: KeySentry, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        KeySentryMiddleware(Starlette(), sentry=ks, **kwargs)
    with pytest.raises(ConfigurationError):
        KeySentryWSGIMiddleware(Flask(__name__).wsgi_app, sentry=ks, **kwargs)


def test_permission_map_takes_a_single_string(ks: KeySentry) -> None:
    mw = KeySentryMiddleware(Starlette(), sentry=ks, permissions={"GET /x": "x:read"})
    assert mw.config.required("GET", "/x") == ("x:read",)
    assert mw.config.required("HEAD", "/x") == ("x:read",)
    assert mw.config.required("POST", "/x") == ()


def test_bad_checksum_costs_no_cache_and_no_store_call(call: Call, ks: KeySentry) -> None:
    secret = ks.create_api_key("internal-api", "k").secret
    counts = {"cache": 0, "store": 0}
    real_get, real_find = ks.cache.get, ks.store.find_keys

    def counted_get(digest: str, *now: float) -> Any:
        counts["cache"] += 1
        return real_get(digest, *now)

    def counted_find(prefix: str, suffix: str) -> Any:
        counts["store"] += 1
        return real_find(prefix, suffix)

    ks.cache.get = counted_get  # type: ignore[method-assign]
    ks.store.find_keys = counted_find  # type: ignore[method-assign]
    broken = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    assert call("GET", "/users/1", bearer(broken)).status == 401
    assert counts == {"cache": 0, "store": 0}
    assert call("GET", "/users/1", bearer(secret)).status == 200
    assert counts["cache"] == 1  # the counters do see a real lookup


def test_streaming_bodies_pass_through_chunk_by_chunk(ks: KeySentry) -> None:
    import anyio

    secret = ks.create_api_key("internal-api", "k").secret
    chunks_in = [b"a" * 10, b"b" * 10, b""]
    received: list[bytes] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"1", b"2", b"3"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    incoming = iter({"type": "http.request", "body": c, "more_body": bool(c)} for c in chunks_in)

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/users/1", "root_path": "",
             "headers": [(b"authorization", f"Bearer {secret}".encode())]}  # fmt: skip
    anyio.run(KeySentryMiddleware(app, sentry=ks), scope, receive, send)
    assert received == chunks_in  # each request chunk reached the app as sent
    assert [m.get("body") for m in sent[1:]] == [b"1", b"2", b"3", b""]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_middleware_resource_templates(ks: KeySentry, kind: str) -> None:
    # the resource is taken from a route template instead of the path: /orders/7 is the
    # resource "users/7" here (the first route that matches wins), other paths stay paths
    templates = {"GET /orders/{order_id}": "users/{order_id}",
                 "/orders/{order_id}/*": "nobody/{order_id}"}  # fmt: skip
    ks.update_api_auth_app("internal-api", resources=["users/7"])
    secret = ks.create_api_key("internal-api", "k").secret
    headers = {"Authorization": f"Bearer {secret}"}
    if kind == "wsgi":
        calls = [wsgi_caller(flask_app(ks, resources=templates))]
    else:
        calls = list(asgi_caller(starlette_app(ks, resources=templates)))
    call = calls[0]
    assert call("GET", "/orders/7", headers).status == 200  # users/7
    assert call("HEAD", "/orders/7", headers).status == 200  # HEAD counts as GET
    assert call("GET", "/orders/8", headers).body["errors"][0]["reason"] == "resource_denied"
    assert call("GET", "/users/7", headers).status == 200  # no template: the path
    assert call("GET", "/users/8", headers).status == 403


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"/users/{id}": "users/{other}"}, "does not capture"),
        ({"/users/{id}/{id}": "users/{id}"}, "appears twice"),
        ({"/users/x{id}": "users/{id}"}, "whole segment"),
        ({"/users/*/orders": "users"}, "whole segment"),
        ({"users/{id}": "users/{id}"}, "must start with '/'"),
        ({"get /users/{id}": "users/{id}"}, "uppercase HTTP method"),
        ({"/users/{id}": "users/{id:>4}"}, "braces may only name"),
        ({"/users/{id}": 7}, "maps a route string"),
        (["/users/{id}"], "must map routes"),
    ],
)
def test_bad_resource_templates_are_named(ks: KeySentry, resources: Any, message: str) -> None:
    # at construction (Starlette's add_middleware would only build it at the first request)
    with pytest.raises(ConfigurationError, match=message):
        KeySentryMiddleware(starlette_app(ks), sentry=ks, resources=resources)
    with pytest.raises(ConfigurationError, match=message):
        KeySentryWSGIMiddleware(flask_app(ks).wsgi_app, sentry=ks, resources=resources)
