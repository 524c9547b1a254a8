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

from collections.abc import Mapping, Sequence

from keysentry.core.decision import Decision, Identity
from keysentry.core.headers import allowed_header_bytes
from keysentry.core.pipeline import LookupKey
from keysentry.errors import ConfigurationError
from keysentry.service import KeySentry
from keysentry.toolkit.config import AdapterConfig
from keysentry.toolkit.facts import scope_bearer, scope_facts, scope_header
from keysentry.toolkit.guard import unexpected_failure
from keysentry.toolkit.identity import ApiKeyUser, PermissionScopes, attach
from keysentry.toolkit.render import refuse_asgi
from keysentry.types import ASGIApp, Message, Receive, Scope, Send

# ApiKeyUser, PermissionScopes, attach and scope_facts are the toolkit's, named here too
__all__ = ["ApiKeyUser", "KeySentryMiddleware", "PermissionScopes", "attach", "scope_facts"]


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
        costs: route -> the credits a request spends from a key with a credit limit, e.g.
            ``{"POST /reports": 10}``; any other request spends 1.

    Raises:
        ConfigurationError: a malformed option, named in the message.
        TypeError: in the compiled build (mypyc), a non-bool *allow_preflight* or
            *read_authorization*, refused by the call itself.
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
        costs: Mapping[str, int] | None = None,
    ) -> None:
        if not isinstance(sentry, KeySentry):
            raise ConfigurationError("sentry must be a KeySentry")
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
            costs=costs,
        )
        self._api_key_header = scope_header(self.config.api_key_header)
        self._read_authorization = self.config.read_authorization
        # the one-step path reads the routes this config has already seen, and only where
        # Authorization is the one place a key may come from
        self._routes = self.config.seen if self._api_key_header is None else {}
        self._quick = sentry.verifier.quick
        self._averify = sentry.verifier.averify_request_general

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        verdict: Identity | Decision | LookupKey | None = None
        if kind == "http":
            # the usual request: a route seen before, one Authorization header, a plain
            # cached key (Verifier.quick); everything else, the general path below
            method, path = scope["method"], scope["path"]
            policy = self._routes.get((method, path))
            if policy is not None and method != "OPTIONS" and not scope.get("root_path"):
                credential = scope_bearer(scope)
                if credential is not None:
                    try:
                        # called from a local: CPython 3.11 does not specialize a method
                        # call on an attribute that holds a callable (the generic lookup)
                        quick = self._quick
                        verdict = quick(credential, path, policy)
                    except Exception:  # a bug must not become a 500 or an open door
                        verdict = unexpected_failure()
        elif kind != "websocket":
            if kind == "lifespan":
                send = self._closing_on_shutdown(send)
            await self.app(scope, receive, send)  # lifespan and others pass untouched
            return
        if type(verdict) is not Identity:  # refused, or not decided in one step
            decision = verdict if type(verdict) is Decision else await self._verify(scope, verdict)
            if decision is None:  # excluded, or a CORS preflight
                await self.app(scope, receive, send)
                return
            if not decision.allowed or decision.identity is None:
                await refuse_asgi(decision, scope, send)
                return
            verdict = decision.identity  # it carries all an admitted verdict adds
        attach(scope, verdict)
        if (verdict.rate_limits or verdict.credits_remaining is not None) and kind == "http":
            extra = allowed_header_bytes(verdict.rate_limits, verdict.credits_remaining)
            respond = send

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), *extra]
                await respond(message)

            send = send_with_headers
        await self.app(scope, receive, send)

    async def _verify(self, scope: Scope, found: LookupKey | None) -> Decision | None:
        """The general path: the verdict on any request, or ``None`` when it passes without
        a key (an excluded path, a CORS preflight); from its second step when the one-step
        path *found* the key in the cache."""
        decision: Decision | None = None
        try:
            facts, preflight = scope_facts(scope, self._api_key_header, self._read_authorization)
            config = self.config
            policy = config.route(facts.method, facts.path, preflight)
            if policy is not None:
                if config.trusted_proxies:
                    forwarded = [v.decode("latin-1") for k, v in scope["headers"]
                                 if k == b"x-forwarded-for"]  # fmt: skip
                    client = config.client_ip(facts.client_ip, forwarded)
                    facts = facts._replace(client_ip=client)
                decision = await self._averify(facts, policy, found)
        except Exception:  # a bug must not become a 500 or an open door
            decision = unexpected_failure()
        return decision

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
