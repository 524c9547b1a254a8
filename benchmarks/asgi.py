"""ASGI in-process: a bare Starlette app vs the same app behind KeySentryMiddleware.

Both apps are called directly through the ASGI interface (no server, no socket), alternately
in one process, so the ratio is the middleware's own cost per request: header scan, key
parse and checksum, SHA-256, cache hit, permission and resource checks, one rate-limit rule
on the in-process limiter and its headers, attaching the identity. Also: ``ks.verify`` on a
cached key (same rule) against the floor, a SHA-256 alone; and the floor of the pair: the
least hand-written Python that does a cache hit's work (``benchmarks/floor.py``) against the
same bare app, which shows how close any pure-Python middleware can come on this machine.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from benchmarks.floor import add_floor
from benchmarks.inlined import InlinedMiddleware
from benchmarks.world import bench_key
from keysentry import KeySentry
from keysentry.asgi import KeySentryMiddleware


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _app() -> Starlette:
    return Starlette(routes=[Route("/users/{user_id}", _hello)])


def _caller(app: Any, headers: list[tuple[bytes, bytes]]) -> Any:
    loop = asyncio.new_event_loop()
    scope = {
        "type": "http", "method": "GET", "path": "/users/42", "root_path": "",
        "query_string": b"", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000), "scheme": "http", "http_version": "1.1",
    }  # fmt: skip
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def many(n: int) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    def run(n: int = 200) -> None:
        loop.run_until_complete(many(n))

    run(1)
    if statuses[-1] != 200:
        raise RuntimeError(f"benchmark app answered {statuses[-1]}, not 200")
    return run


def runner(variant: str, ks: KeySentry, secret: str) -> Any:
    """The ``run(n)`` of the app "bare", behind "keysentry" (*ks*), behind keysentry's path
    "inlined" (*ks*), or behind the "floor", each sent requests carrying *secret*."""
    app = _app()
    if variant in ("keysentry", "inlined"):
        # "inlined": keysentry's one-step path in one function (benchmarks/inlined.py)
        middleware = KeySentryMiddleware if variant == "keysentry" else InlinedMiddleware
        app.add_middleware(middleware, sentry=ks, permissions={"GET /users/*": ["users:read"]})
    elif variant == "floor":
        add_floor(app, hashlib.sha256(secret.encode()).hexdigest())
    elif variant != "bare":
        raise ValueError(f"unknown variant {variant!r}")
    headers = [(b"host", b"localhost"), (b"user-agent", b"bench"), (b"accept", b"*/*"),
               (b"authorization", f"Bearer {secret}".encode())]  # fmt: skip
    return _caller(app, headers)


# each against bare Starlette: (scenario, variant, label, target)
_PAIRS = [
    ("ASGI in-process, 200 requests", "keysentry",
     "Starlette + KeySentryMiddleware (cache hit, 1 rule)", 0.70),
    ("ASGI in-process, the floor (not keysentry)", "floor",
     "Starlette + benchmarks/floor.py (same work, minimal)", None),
    ("ASGI in-process, keysentry's path inlined (not for use)", "inlined",
     "Starlette + benchmarks/inlined.py (keysentry's work, one function)", None),
]  # fmt: skip


def scenarios(compare: Any, rounds: int) -> list[Any]:
    ks = KeySentry("memory://", usage_interval=None)
    secret = bench_key(ks)  # one rule on the in-process limiter
    bare_run = runner("bare", ks, secret)
    results = [
        compare(scenario, (label, runner(variant, ks, secret)), ("bare Starlette", bare_run),
                number=20, rounds=rounds, target=target)
        for scenario, variant, label, target in _PAIRS
    ]  # fmt: skip
    raw = secret.encode()
    results.append(compare(
        "cached verify",
        ("ks.verify(bearer, path=, permissions=)",
         lambda: ks.verify(f"Bearer {secret}", path="/users/42", permissions=["users:read"])),
        ("floor: sha256(key).hexdigest()", lambda: hashlib.sha256(raw).hexdigest()),
        number=20_000,
        rounds=rounds,
    ))  # fmt: skip
    return results
