"""The apps the over-HTTP benchmark serves: each pair is one app, bare and protected.

The protected apps do the same work as the in-process ones (benchmarks/asgi.py): a cache hit,
one permission from the endpoint map, the app's resource patterns, one rate-limit rule on the
in-process limiter and its headers. Their keys live in the database named by
``KEYSENTRY_BENCH_DB`` (prepared by benchmarks/over_http.py), as in a deployment.

``starlette_floor`` is the Starlette app behind the hand-written floor of
``benchmarks/floor.py``: how close any pure-Python middleware comes, served the same way.
``starlette_inlined``, behind keysentry's own path written as one function
(``benchmarks/inlined.py``), shows what the module structure costs, served.

Served as ``uvicorn benchmarks.http_apps:starlette_protected --factory`` and
``gunicorn 'benchmarks.http_apps:flask_protected()'``.
"""

from __future__ import annotations

import os
from typing import Any

from keysentry import KeySentry

PERMISSIONS = {"GET /users/*": ["users:read"]}


def _sentry() -> KeySentry:
    return KeySentry(os.environ["KEYSENTRY_BENCH_DB"])


def _starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/users/{user_id}", hello)])


def starlette_bare() -> Any:
    """A Starlette app with one route."""
    return _starlette()


def starlette_protected() -> Any:
    """The same app behind ``KeySentryMiddleware``."""
    from keysentry.asgi import KeySentryMiddleware

    app = _starlette()
    app.add_middleware(KeySentryMiddleware, sentry=_sentry(), permissions=PERMISSIONS)
    return app


def starlette_floor() -> Any:
    """The same app behind the hand-written floor of ``benchmarks/floor.py`` (not
    keysentry): the key's digest comes from ``KEYSENTRY_BENCH_DIGEST``."""
    from benchmarks.floor import add_floor

    app = _starlette()
    add_floor(app, os.environ["KEYSENTRY_BENCH_DIGEST"])
    return app


def starlette_inlined() -> Any:
    """The same app behind keysentry's one-step path written as one function
    (``benchmarks/inlined.py``, not for use): what the module structure costs, served."""
    from benchmarks.inlined import InlinedMiddleware

    app = _starlette()
    app.add_middleware(InlinedMiddleware, sentry=_sentry(), permissions=PERMISSIONS)
    return app


def _flask() -> Any:
    from flask import Flask

    app = Flask("bench")

    @app.get("/users/<user_id>")
    def hello(user_id: str) -> str:
        return "hello"

    return app


def flask_bare() -> Any:
    """A Flask app with one route."""
    return _flask()


def flask_protected() -> Any:
    """The same app behind ``KeySentryWSGIMiddleware``."""
    from keysentry.wsgi import KeySentryWSGIMiddleware

    app = _flask()
    app.wsgi_app = KeySentryWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, sentry=_sentry(), permissions=PERMISSIONS
    )
    return app
