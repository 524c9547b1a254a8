"""A protected Starlette app on the store named by KEYSENTRY_DATABASE_URL (and the limiter
named by KEYSENTRY_LIMITER_URL, if set), for tests that run it as separate uvicorn processes.
TEST_ON_LIMITER_ERROR, TEST_LIMITER_TIMEOUT, TEST_CACHE_TTL, TEST_MAX_STALE and
TEST_RATE_LIMIT_ALGORITHM set those options."""

from __future__ import annotations

import os
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from keysentry import KeySentry
from keysentry.asgi import KeySentryMiddleware
from keysentry.types import ASGIApp, Message, Receive, Scope, Send


class WorkerPid:
    """Add ``x-worker-pid`` to every response: which worker process answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"x-worker-pid", PID)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_pid)


PID = str(os.getpid()).encode()
ks = KeySentry(
    os.environ["KEYSENTRY_DATABASE_URL"],
    limiter_url=os.environ.get("KEYSENTRY_LIMITER_URL"),
    on_limiter_error=os.environ.get("TEST_ON_LIMITER_ERROR", "open"),  # type: ignore[arg-type]
    limiter_timeout=float(os.environ.get("TEST_LIMITER_TIMEOUT", "0.1")),
    cache_ttl=float(os.environ.get("TEST_CACHE_TTL", "30")),
    max_stale=float(os.environ.get("TEST_MAX_STALE", "60")),
    rate_limit_algorithm=os.environ.get("TEST_RATE_LIMIT_ALGORITHM", "sliding_window"),  # type: ignore[arg-type]
)


async def whoami(request: Request) -> JSONResponse:
    identity = request.state.api_key
    body = {"key": identity.key_id, "pid": os.getpid()}
    if identity.rate_limits:  # when the first rule's window ends, by this machine's clock
        body["window_end_ms"] = int(time.time() * 1000) + identity.rate_limits[0].reset_ms
    return JSONResponse(body)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/whoami", whoami), Route("/health", health)])
app.add_middleware(KeySentryMiddleware, sentry=ks, exclude=["/health"])
app.add_middleware(WorkerPid)  # outermost: the middleware's refusals say it too
