"""A refusal as a response (status, headers, JSON body) for ASGI HTTP and WebSocket, WSGI,
Starlette and Flask: the same bytes whichever adapter answers. An admitted request's headers
are :func:`keysentry.core.headers.allowed_header_bytes` (:func:`add_verdict_headers` puts them
on a Starlette response)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from starlette.responses import Response

from keysentry.core.decision import Decision
from keysentry.core.headers import ALLOWED_HEADER_NAMES, allowed_header_bytes
from keysentry.types import Scope, Send, StartResponse

__all__ = [
    "add_verdict_headers",
    "asgi_headers",
    "flask_refusal",
    "refusal_parts",
    "refusal_response",
    "refuse_asgi",
    "refuse_wsgi",
    "with_wsgi_headers",
]

# Header names keysentry sends, encoded once.
_NAMES = {
    name: name.encode()
    for name in (
        "ratelimit-policy", "ratelimit", "x-ratelimit-limit", "x-ratelimit-remaining",
        "x-ratelimit-reset", "retry-after", "content-type", "www-authenticate",
    )
}  # fmt: skip
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def asgi_headers(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    """A verdict's headers as ASGI wants them (bytes)."""
    names = _NAMES
    raw = []
    for name, value in headers:
        encoded = names.get(name)
        raw.append((encoded or name.encode("latin-1"), value.encode("latin-1")))
    return raw


def _encoded(decision: Decision) -> list[tuple[bytes, bytes]]:
    headers = asgi_headers(decision.headers)
    headers.append((b"content-length", str(len(decision.body)).encode()))
    return headers


async def refuse_asgi(decision: Decision, scope: Scope, send: Send) -> None:
    """Answer a refused HTTP request or WebSocket handshake.

    A WebSocket is refused before it is accepted. With the ``websocket.http.response``
    extension the client gets the same status and JSON body as over HTTP; without it,
    closing before accept makes the server answer 403 (the ASGI spec), close code 1008.
    """
    if scope["type"] == "http":
        start = {"type": "http.response.start", "status": decision.status,
                 "headers": _encoded(decision)}  # fmt: skip
        await send(start)
        body = b"" if scope.get("method") == "HEAD" else decision.body
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": decision.status,
                    "headers": _encoded(decision)})  # fmt: skip
        await send({"type": "websocket.http.response.body", "body": decision.body})
    else:
        await send({"type": "websocket.close", "code": 1008})


def refusal_parts(decision: Decision) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status line, headers and body of a refusal, for WSGI and Flask."""
    headers = [*decision.headers, ("content-length", str(len(decision.body)))]
    return _STATUS_LINES[decision.status], headers, decision.body


def refuse_wsgi(decision: Decision, method: str, start_response: StartResponse) -> list[bytes]:
    """Answer a refused WSGI request."""
    status, headers, body = refusal_parts(decision)
    start_response(status, headers)
    return [b""] if method == "HEAD" else [body]


def with_wsgi_headers(start_response: StartResponse, extra: list[tuple[str, str]]) -> StartResponse:
    """Add the rate-limit headers to the app's response."""

    def start_with_headers(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
        return start_response(status, [*headers, *extra], *args)

    return start_with_headers


def add_verdict_headers(response: Response, decision: Decision) -> None:
    """Set an admitted *decision*'s headers on a Starlette response, each replacing any of
    the same name, as ``response.headers[name] = value`` does, in one pass: through
    ``MutableHeaders`` each header costs a scan of the list and its encoding, more than a
    verification. They are the middleware's encoded bytes (its ``fixed_headers`` are the
    credits left, which the identity carries)."""
    identity = decision.identity
    if identity is None or not (decision.rate_limits or decision.fixed_headers):
        return
    extra = allowed_header_bytes(decision.rate_limits, identity.credits_remaining)
    raw = response.headers.raw  # the response's own list
    for name, _ in raw:  # usually a handler's own few, none of them ours
        if name in ALLOWED_HEADER_NAMES:
            names = {name for name, _ in extra}
            raw[:] = [item for item in raw if item[0] not in names]
            break
    raw.extend(extra)


def refusal_response(decision: Decision) -> Response:
    """The Starlette response for a refused request: the middleware's status, headers and
    JSON body."""
    return Response(decision.body, decision.status, headers=dict(decision.headers))


def flask_refusal(decision: Decision) -> Any:
    """The Flask response for a refused request."""
    from flask import Response as FlaskResponse

    status, headers, body = refusal_parts(decision)
    return FlaskResponse(body, status, headers)
