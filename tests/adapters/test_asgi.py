"""The ASGI adapters: the behaviour table through the middleware, ``ks.require`` on
Starlette and ``ks.depends`` on FastAPI; then what only ASGI has (lifespan, WebSocket,
streaming, Starlette's ``requires``)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from keysentry import KeySentry
from keysentry.asgi import KeySentryMiddleware
from tests.adapters.behaviour import *  # noqa: F403  (the shared table)
from tests.adapters.support import (
    bearer,
    refused_raw,
    starlette_app,
)

ADAPTERS = ["asgi", "require-starlette", "fastapi-depends"]
MIDDLEWARE = "asgi"


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


def test_permission_map_takes_a_single_string(ks: KeySentry) -> None:
    mw = KeySentryMiddleware(Starlette(), sentry=ks, permissions={"GET /x": "x:read"})
    assert mw.config.required("GET", "/x") == ("x:read",)
    assert mw.config.required("HEAD", "/x") == ("x:read",)
    assert mw.config.required("POST", "/x") == ()


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
