"""The other two ways in, called in-process like benchmarks/asgi.py, each against the same
app without keysentry (cache hit, a permission, one rule on the in-process limiter):

* FastAPI with ``Depends(ks.depends("users:read"))`` on the route.
* Flask behind ``KeySentryWSGIMiddleware`` (the WSGI app called directly with an environ).
"""

from __future__ import annotations

import io
from functools import partial
from typing import Any

from benchmarks.asgi import _caller
from benchmarks.world import bench_key
from keysentry import Identity, KeySentry


def _sentry() -> tuple[KeySentry, str]:
    ks = KeySentry("memory://", usage_interval=None)
    return ks, bench_key(ks)


def fastapi_apps(ks: KeySentry) -> tuple[Any, Any]:
    """A FastAPI app with one route, bare and with ``Depends(ks.depends("users:read"))``."""
    from fastapi import Depends, FastAPI

    bare, protected = FastAPI(), FastAPI()

    @bare.get("/users/{user_id}")
    async def bare_user(user_id: int) -> dict[str, int]:
        return {"user": user_id}

    # a default, not Annotated[...]: this module's annotations are strings (PEP 563) and a
    # local name inside one would not resolve
    requirement = Depends(ks.depends("users:read"))

    @protected.get("/users/{user_id}")
    async def user(user_id: int, key: Identity = requirement) -> dict[str, int]:
        return {"user": user_id}

    return bare, protected


def fastapi_scenario(compare: Any, rounds: int) -> Any:
    ks, secret = _sentry()
    bare, protected = fastapi_apps(ks)
    headers = [(b"host", b"localhost"), (b"authorization", f"Bearer {secret}".encode())]
    n = 100
    return compare(
        f"FastAPI in-process, {n} requests",
        ("FastAPI + Depends(ks.depends(...))", partial(_caller(protected, headers), n)),
        ("bare FastAPI", partial(_caller(bare, headers), n)),
        number=3, rounds=rounds, target=0.70,
    )  # fmt: skip


def _wsgi_caller(app: Any, secret: str, n: int) -> Any:
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/users/42", "SCRIPT_NAME": "",
        "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost", "HTTP_AUTHORIZATION": f"Bearer {secret}",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }  # fmt: skip
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    def many() -> None:
        for _ in range(n):
            body = app(dict(environ), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()

    many()
    if {s[:3] for s in statuses} != {"200"}:
        raise RuntimeError(f"benchmark app answered {sorted(set(statuses))}")
    return many


def flask_scenario(compare: Any, rounds: int) -> Any:
    from flask import Flask

    from keysentry.wsgi import KeySentryWSGIMiddleware

    ks, secret = _sentry()

    def make() -> Flask:
        app = Flask("bench")

        @app.get("/users/<int:user_id>")
        def user(user_id: int) -> dict[str, int]:
            return {"user": user_id}

        return app

    bare, protected = make(), make()
    protected.wsgi_app = KeySentryWSGIMiddleware(  # type: ignore[method-assign]
        protected.wsgi_app, sentry=ks, permissions={"GET /users/*": ["users:read"]}
    )
    n = 100
    return compare(
        f"Flask (WSGI) in-process, {n} requests",
        ("Flask + KeySentryWSGIMiddleware", _wsgi_caller(protected, secret, n)),
        ("bare Flask", _wsgi_caller(bare, secret, n)),
        number=3, rounds=rounds, target=0.90,
    )  # fmt: skip


def scenarios(compare: Any, rounds: int) -> list[Any]:
    return [fastapi_scenario(compare, rounds), flask_scenario(compare, rounds)]
