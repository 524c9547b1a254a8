"""A protected Starlette app on the store named by KEYSENTRY_DATABASE_URL, for tests that
run it as a separate uvicorn process."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from keysentry import KeySentry
from keysentry.asgi import KeySentryMiddleware

ks = KeySentry(os.environ["KEYSENTRY_DATABASE_URL"])


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"key": request.state.api_key.key_id})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/whoami", whoami), Route("/health", health)])
app.add_middleware(KeySentryMiddleware, sentry=ks, exclude=["/health"])
