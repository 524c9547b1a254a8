"""The ASGI adapters' one-step path against their general path, by generated requests sent
as a server sends them (ASGI scopes with raw paths and header bytes). Two apps share one
store: one protected as configured by default, whose requests take the one-step path where
it applies; one whose adapter also reads ``X-API-Key``, which sends every request down the
general path (the requests carry no ``X-API-Key``, so both must read the same key the same
way). Each way an ASGI app is protected: ``KeySentryMiddleware``, ``@ks.require`` on an
async and on a sync handler, FastAPI's ``Depends(ks.depends(...))``. (A guard configured
for ``X-API-Key`` still tries the one-step path, inside ``verify_request`` on the request's
facts: for the guards this holds their own first step, read straight from the scope, to
that one; ``tests/verification/test_quick_differential.py`` holds both to the general path.)
Status, headers, body,
what the handler sees of the identity (``request.state.api_key``, ``request.auth``,
``request.user``) and the usage recorded must match."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from keysentry import KeySentry
from keysentry.asgi import KeySentryMiddleware
from keysentry.core.pipeline import path_problem
from keysentry.types import ASGIApp, Message
from tests.verification.generated import (
    PATH,
    WAITS,
    World,
    last_uses,
    runs,
    same_usage,
    secret_of,
)

PERMISSIONS = {"GET /users/*": ["users:read"], "POST /users/*": ["users:write"],
               "GET /orders/*": ["orders:read"], "DELETE /orders/*": ["orders:write"]}  # fmt: skip


def seen(request: Request) -> dict[str, Any]:
    """What a handler sees of the request's identity."""
    identity = request.state.api_key
    auth, user = request.scope.get("auth"), request.scope.get("user")
    return {
        "key_id": identity.key_id,
        "rate_limits": [[o.allowed, o.remaining, o.reset_ms] for o in identity.rate_limits],
        "credits": identity.credits_remaining,
        "scopes": None if auth is None else list(auth.scopes),
        "user": None if user is None else user.identity,
        "method": request.method,
    }  # fmt: skip


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse(seen(request))


def whoami_sync(request: Request) -> JSONResponse:
    return JSONResponse(seen(request))


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def middleware(ks: KeySentry, **options: Any) -> ASGIApp:
    app = Starlette(routes=[
        Route("/users/{user_id}", whoami, methods=["GET", "POST", "HEAD"]),
        Route("/orders/{order_id}", whoami, methods=["GET", "DELETE"]),
        Route("/health", health),
    ])  # fmt: skip
    app.add_middleware(KeySentryMiddleware, sentry=ks, permissions=PERMISSIONS,
                       exclude=["/health"], **options)  # fmt: skip
    return app


def guarded(ks: KeySentry, handler: Any, **options: Any) -> ASGIApp:
    def require(*permissions: str, resource: str | None = None) -> Any:
        return ks.require(*permissions, resource=resource, **options)(handler)

    return Starlette(routes=[
        Route("/users/{user_id}", require("users:read", resource="users/{user_id}"),
              methods=["GET", "HEAD"]),
        Route("/users/{user_id}", require("users:write"), methods=["POST"]),
        Route("/orders/{order_id}", require("orders:read"), methods=["GET"]),
        Route("/orders/{order_id}", require("orders:write"), methods=["DELETE"]),
        Route("/health", health),
    ])  # fmt: skip


def require_async(ks: KeySentry, **options: Any) -> ASGIApp:
    return guarded(ks, whoami, **options)


def require_sync(ks: KeySentry, **options: Any) -> ASGIApp:
    return guarded(ks, whoami_sync, **options)


def depends(ks: KeySentry, **options: Any) -> ASGIApp:
    from fastapi import Depends, FastAPI

    app = FastAPI(openapi_url=None)
    read = Depends(ks.depends("users:read", resource="users/{user_id}", **options))
    write = Depends(ks.depends("users:write", **options))

    @app.api_route("/users/{user_id}", methods=["GET", "HEAD"], dependencies=[read])
    async def read_user(user_id: str, request: Request) -> dict[str, Any]:
        return seen(request)

    @app.post("/users/{user_id}", dependencies=[write])
    def write_user(user_id: str, request: Request) -> dict[str, Any]:
        return seen(request)

    return app


async def send_request(
    app: ASGIApp, method: str, path: str, headers: list[tuple[bytes, bytes]], root_path: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request as a server hands it to the app: status, headers, body."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": root_path + path,
             "raw_path": (root_path + path).encode(), "root_path": root_path,
             "query_string": b"", "headers": headers, "client": ("127.0.0.1", 50000),
             "server": ("testserver", 80), "state": {}}  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], list(start.get("headers", [])), body


AUTHORIZATION = st.sampled_from(["Bearer", "bearer", "Bearer ", "Basic"])
request = st.tuples(
    # OPTIONS is a CORS preflight, or not (then it is verified, and its route remembered)
    st.sampled_from(["GET", "GET", "POST", "HEAD", "DELETE", "OPTIONS", "preflight", "get"]),
    # the path the router sees under a root path of "/api" is also sent whole without one
    st.one_of(PATH, st.just("/api/users/1")),
    st.sampled_from(WAITS),
    st.sampled_from(["", "", "", "/api"]),  # a root path, as behind a mounted app
    # one Authorization header, none, or another before it
    st.sampled_from(["one", "one", "one", "two", "none"]),
    AUTHORIZATION,
)


def _req(
    name: str,
    method: str = "GET",
    path: str = "/users/1",
    root: str = "",
    count: str = "one",
    wait: float = 0.0,
) -> tuple[Any, ...]:
    """A request by the key *name* (the drawn shape)."""
    return (("key", name), (method, path, wait, root, count, "Bearer"))


@pytest.mark.parametrize(
    "protect",
    [middleware, require_async, require_sync, depends],
    ids=["middleware", "require", "require-sync", "depends"],
)
@settings(max_examples=60)
@given(run=runs(request, max_size=10))
# headers and outcomes, then a 429
@example(run=[_req("limited"), _req("limited", wait=7.0), _req("limited", wait=0.5)])
# cached before its expiry, asked after
@example(run=[_req("expiring", wait=13.0), _req("expiring", wait=13.0)])
# a seen route and a cached key, on a path with a dot segment
@example(run=[_req("plain"), _req("plain", path="/users/./1")])
# one scope path, seen without a root path, then asked under one
@example(run=[_req("plain", path="/api/users/1"), _req("plain", root="/api")])
# OPTIONS verified (its route remembered), then a CORS preflight to the same route
@example(run=[_req("plain", "OPTIONS"), _req("plain", "preflight")])
# a cached key, then the same after another Authorization header
@example(run=[_req("plain"), _req("plain", count="two")])
def test_each_asgi_adapter_answers_alike_on_its_one_step_and_general_paths(
    protect: Callable[..., ASGIApp], run: list[tuple[Any, ...]]
) -> None:
    world = World()
    fast_app = protect(world.quick)
    slow_app = protect(world.general, api_key_header="X-API-Key", read_authorization=True)
    try:
        with asyncio.Runner() as runner:
            for drawn, (method, path, wait, root, count, scheme) in run:
                world.clock.advance(wait)
                value = f"{scheme} {secret_of(world, drawn)}".encode("latin-1")
                headers = [(b"host", b"testserver")]
                if count == "two":
                    headers.append((b"authorization", b"Bearer sk_test_other"))
                if count != "none":
                    headers.append((b"authorization", value))
                if method == "preflight":
                    method = "OPTIONS"
                    headers += [(b"origin", b"https://example.com"),
                                (b"access-control-request-method", b"GET")]  # fmt: skip
                for _ in range(2):  # the second time, the route is one the middleware has seen
                    fast = runner.run(send_request(fast_app, method, path, headers, root))
                    slow = runner.run(send_request(slow_app, method, path, headers, root))
                    assert fast == slow, (method, path, root, value)
                    if fast[0] == 200 and method not in ("HEAD", "OPTIONS"):
                        assert json.loads(fast[2])["method"] == method.upper()
        doubled, both = same_usage(world)
        assert doubled == both
        assert last_uses(world.general) == last_uses(world.quick)
        if protect is not middleware:
            return  # a guard verifies only the requests its routes match
        # a request with one key, one Authorization header and a clean path is its app's
        by_key = sum(
            d[0] == "key" and (r[4], r[5]) == ("one", "Bearer") and r[0] != "preflight"
            and not path_problem(r[1])
            for d, r in run
        )  # fmt: skip
        assert sum(doubled.values()) >= 2 * 2 * by_key  # each request was sent twice
    finally:
        world.close()
