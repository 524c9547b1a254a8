"""``KeySentryMiddleware``: verify API keys in front of any ASGI app (Starlette, FastAPI, …).

Pure ASGI (not ``BaseHTTPMiddleware``): request and response bodies stream through untouched,
and a refused request never reaches the app. On success the identity is put where each
framework looks for it: ``request.state.api_key`` (``scope["state"]["api_key"]``), and
Starlette's ``scope["auth"]`` / ``scope["user"]``, so that ``starlette.authentication.requires``
works too (with keysentry's glob matching: a key holding ``users:*`` satisfies
``requires("users:read")``).

Usage::

    app.add_middleware(KeySentryMiddleware, sentry=ks, exclude=["/health"],
                       permissions={"GET /users/*": ["users:read"]})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from starlette.authentication import AuthCredentials, BaseUser

from keysentry._adapter import AdapterConfig, scope_header
from keysentry.core.decision import Decision, Identity, Reason
from keysentry.core.patterns import Grants
from keysentry.core.pipeline import RequestFacts, normal_method
from keysentry.service import KeySentry
from keysentry.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiKeyUser", "KeySentryMiddleware", "PermissionScopes", "attach", "scope_facts"]

logger = logging.getLogger("keysentry")
_new = tuple.__new__  # builds the RequestFacts of each request (see core.pipeline)


class PermissionScopes(list[str]):
    """The key's permission patterns; ``"users:read" in scopes`` matches by glob."""

    def __init__(self, identity: Identity) -> None:
        super().__init__(identity.permissions)
        self._identity = identity

    def __contains__(self, permission: object) -> bool:
        return isinstance(permission, str) and self._identity.has_permission(permission)


class ApiKeyUser(BaseUser):
    """Starlette's ``request.user`` for a request made with an API key."""

    def __init__(self, identity: Identity) -> None:
        self.api_key = identity

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.api_key.key_name

    @property
    def identity(self) -> str:
        return self.api_key.key_id


def _credentials(identity: Identity) -> AuthCredentials:
    credentials = AuthCredentials()
    credentials.scopes = PermissionScopes(identity)  # AuthCredentials copies to a plain list
    return credentials


class KeySentryMiddleware:
    """Verify the API key of every HTTP request and WebSocket handshake.

    Args:
        app: the ASGI app to protect.
        sentry: the :class:`~keysentry.KeySentry` that verifies keys.
        exclude: path patterns served without a key, e.g. ``["/health", "/docs*"]``.
        permissions: endpoint pattern -> required permissions, e.g.
            ``{"GET /users/*": ["users:read"], "POST /users/*": ["users:write"]}``.
        api_key_header: read the key from this header (e.g. ``"X-API-Key"``) instead of
            ``Authorization``, which is then left to the app.
        read_authorization: with *api_key_header*, also accept ``Authorization: Bearer``.
        allow_preflight: let CORS preflight requests through unauthenticated (default
            ``True``).
        trusted_proxies: addresses or networks of your reverse proxies; requests from them
            take the client address (for per-IP rate limits) from ``X-Forwarded-For``.
        resources: route -> resource template, e.g. ``{"/users/{user_id}/*":
            "users/{user_id}"}``; the resource is otherwise the path without its ``/``.

    Raises:
        ConfigurationError: a malformed option, named in the message.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        sentry: KeySentry,
        exclude: Sequence[str] = (),
        permissions: Mapping[str, Sequence[str] | str] | None = None,
        api_key_header: str | None = None,
        allow_preflight: bool = True,
        trusted_proxies: Sequence[str] = (),
        resources: Mapping[str, str] | None = None,
        read_authorization: bool | None = None,
    ) -> None:
        self.app = app
        self.sentry = sentry
        self.config = AdapterConfig.build(
            exclude=exclude,
            permissions=permissions,
            api_key_header=api_key_header,
            allow_preflight=allow_preflight,
            trusted_proxies=trusted_proxies,
            resources=resources,
            read_authorization=read_authorization,
        )
        self._api_key_header = scope_header(self.config.api_key_header)
        self._read_authorization = self.config.read_authorization

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                send = self._closing_on_shutdown(send)
            await self.app(scope, receive, send)  # lifespan and others pass untouched
            return
        facts, preflight = scope_facts(scope, self._api_key_header, self._read_authorization)
        config = self.config
        if config.unguarded(facts.method, facts.path, preflight):
            await self.app(scope, receive, send)
            return
        try:
            if config.trusted_proxies:
                forwarded = [v.decode("latin-1") for k, v in scope["headers"]
                             if k == b"x-forwarded-for"]  # fmt: skip
                facts = facts._replace(client_ip=config.client_ip(facts.client_ip, forwarded))
            policy = config.policy(facts.method, facts.path)
            decision = await self.sentry.averify_request(facts, policy)
        except Exception:  # a bug must not become a 500 or an open door: refuse, log
            logger.exception("keysentry: verification failed unexpectedly; answering 503")
            decision = Decision.deny(Reason.UNAVAILABLE)
        if decision.allowed:
            attach(scope, decision.identity)  # type: ignore[arg-type]  # always set if allowed
            if decision.headers and kind == "http":
                send = _with_headers(send, _raw_headers(decision))
            await self.app(scope, receive, send)
        elif kind == "http":
            await _refuse_http(decision, facts.method, send)
        else:
            await _refuse_websocket(decision, scope, send)

    def _closing_on_shutdown(self, send: Send) -> Send:
        """Pass the app's lifespan messages on unchanged; just before the app reports that
        it has shut down, write the pending ``last_used_at`` times and close the limiter's
        connections of this event loop (Redis)."""
        sentry = self.sentry

        async def send_closing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                from anyio import to_thread  # starlette's dependency

                await to_thread.run_sync(sentry.usage.flush)  # a database write
                await sentry.limiter.aclose()
            await send(message)

        return send_closing


def scope_facts(
    scope: Scope, api_key_header: bytes | None = None, read_authorization: bool = True
) -> tuple[RequestFacts, bool]:
    """Gather what verification needs from an HTTP or WebSocket scope, in one pass over the
    headers. Returns the facts and whether the request is a CORS preflight.

    The method is upper-cased here, in the scope too, so that the app routes the request
    by the method that was checked (``delete`` is checked and served as ``DELETE``).
    """
    path: str = scope["path"]
    root = scope.get("root_path")
    if root and path.startswith(root):  # the path as the router sees it
        path = path[len(root) :] or "/"
    raw_method: str = scope.get("method", "GET")  # a WebSocket handshake is a GET
    method = normal_method(raw_method)
    if method is not raw_method and method:
        scope["method"] = method
    authorization: tuple[str, ...] = ()
    api_key: tuple[str, ...] = ()
    preflight_headers = 0
    for name, value in scope["headers"]:
        if name == b"authorization" and read_authorization:
            authorization += (value.decode("latin-1"),)
        elif name == api_key_header:
            api_key += (value.decode("latin-1"),)
        elif name == b"origin" or name == b"access-control-request-method":
            preflight_headers += 1
    client = scope.get("client")
    client_ip = client[0] if client else None
    facts = _new(RequestFacts, (method, path, authorization, api_key, client_ip))
    return facts, preflight_headers >= 2 and method == "OPTIONS"


# Starlette's auth objects for each key, built once. They are keyed by the identity's
# compiled grants, which every per-request copy of one cached identity shares and which a
# changed key replaces, so "is" tells a stale pair apart.
_attached: dict[str, tuple[Grants, AuthCredentials]] = {}
_ATTACHED_MAX = 10_000


def attach(scope: Scope, identity: Identity) -> None:
    """Put a verified identity where Starlette, FastAPI and ``ks.require`` look for it."""
    cached = _attached.get(identity.key_id)
    if cached is None or cached[0] is not identity.grants:
        if len(_attached) >= _ATTACHED_MAX:
            _attached.clear()
        cached = (identity.grants, _credentials(identity))
        _attached[identity.key_id] = cached
    state = scope.get("state")
    if state is None:
        scope["state"] = {"api_key": identity}
    else:
        state["api_key"] = identity
    scope["auth"] = cached[1]
    scope["user"] = ApiKeyUser(identity)


# Header names keysentry sends, encoded once.
_NAMES = {
    name: name.encode()
    for name in (
        "ratelimit-policy", "ratelimit", "x-ratelimit-limit", "x-ratelimit-remaining",
        "x-ratelimit-reset", "retry-after", "content-type", "www-authenticate",
    )
}  # fmt: skip


def _raw_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    names = _NAMES
    raw = []
    for name, value in decision.headers:
        encoded = names.get(name)
        raw.append((encoded or name.encode("latin-1"), value.encode("latin-1")))
    return raw


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """Add the rate-limit headers to the app's response; everything else passes as is."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_with_headers


def _encoded(decision: Decision) -> list[tuple[bytes, bytes]]:
    headers = _raw_headers(decision)
    headers.append((b"content-length", str(len(decision.body)).encode()))
    return headers


async def _refuse_http(decision: Decision, method: str, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": decision.status, "headers": _encoded(decision)}
    )
    body = b"" if method == "HEAD" else decision.body
    await send({"type": "http.response.body", "body": body})


async def _refuse_websocket(decision: Decision, scope: Scope, send: Send) -> None:
    # Refuse before accepting. With the "websocket.http.response" extension the client gets
    # the same status and JSON body as over HTTP; without it, closing before accept makes the
    # server answer 403 (the ASGI spec), with close code 1008 (policy violation).
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": decision.status,
                "headers": _encoded(decision),
            }
        )
        await send({"type": "websocket.http.response.body", "body": decision.body})
    else:
        await send({"type": "websocket.close", "code": 1008})
