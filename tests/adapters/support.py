"""The apps, callers and helpers every adapter test uses: one app protected five ways
(two middlewares, two decorators, a FastAPI dependency)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client

from keysentry import KeySentry
from keysentry.asgi import KeySentryMiddleware
from keysentry.flask import current_api_key
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


def make_call(kind: str, ks: KeySentry) -> Iterator[Call]:
    """The caller of the app protected the *kind* way."""
    if kind == "wsgi":
        yield wsgi_caller(flask_app(ks))
    elif kind == "require-flask":
        yield wsgi_caller(flask_decorated(ks))
    else:
        app = {"asgi": starlette_app, "require-starlette": starlette_decorated,
               "fastapi-depends": fastapi_decorated}[kind](ks)  # fmt: skip
        yield from asgi_caller(app)
