"""``KeySentryWSGIMiddleware``: verify API keys in front of any WSGI app (Flask, Django, …).

The WSGI twin of :class:`keysentry.asgi.KeySentryMiddleware`, with the same options. On
success the identity is at ``environ["keysentry.api_key"]`` (and, in Flask,
:data:`keysentry.flask.current_api_key`). Usage::

    flask_app.wsgi_app = KeySentryWSGIMiddleware(flask_app.wsgi_app, sentry=ks,
                                                 exclude=["/health"])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keysentry.core.decision import Decision
from keysentry.errors import ConfigurationError
from keysentry.service import KeySentry
from keysentry.toolkit.config import AdapterConfig
from keysentry.toolkit.facts import environ_facts, environ_var
from keysentry.toolkit.guard import unexpected_failure
from keysentry.toolkit.identity import ENVIRON_KEY
from keysentry.toolkit.render import refusal_parts, refuse_wsgi, with_wsgi_headers
from keysentry.types import StartResponse, WSGIApp

# ENVIRON_KEY, environ_facts and refusal_parts are the toolkit's, named here too
__all__ = ["ENVIRON_KEY", "KeySentryWSGIMiddleware", "environ_facts", "refusal_parts"]


class KeySentryWSGIMiddleware:
    """Verify the API key of every request before the wrapped WSGI app sees it.

    Args:
        app: the WSGI app to protect (for Flask: ``flask_app.wsgi_app``).
        sentry: the :class:`~keysentry.KeySentry` that verifies keys.
        exclude: path patterns served without a key, e.g. ``["/health"]``.
        permissions: endpoint pattern -> required permissions.
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
    """

    def __init__(
        self,
        app: WSGIApp,
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
        self.app = app
        if not isinstance(sentry, KeySentry):
            raise ConfigurationError("sentry must be a KeySentry")
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
        self._api_key_var = environ_var(self.config.api_key_header)
        self._read_authorization = self.config.read_authorization
        self._verify = sentry.verify_request

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        decision: Decision | None = None
        try:
            facts, preflight = environ_facts(environ, self._api_key_var, self._read_authorization)
            config = self.config
            policy = config.route(facts.method, facts.path, preflight)
            if policy is not None:
                if config.trusted_proxies:
                    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
                    client = config.client_ip(facts.client_ip, [forwarded] if forwarded else [])
                    facts = facts._replace(client_ip=client)
                verify = self._verify  # called from a local, as KeySentryMiddleware does
                decision = verify(facts, policy)
        except Exception:  # a bug must not become a 500 or an open door
            decision = unexpected_failure()
        if decision is None:  # excluded, or a CORS preflight
            return self.app(environ, start_response)
        if decision.allowed:
            environ[ENVIRON_KEY] = decision.identity
            if decision.rate_limits or decision.fixed_headers:  # rate limits, credits left
                start_response = with_wsgi_headers(start_response, list(decision.headers))
            return self.app(environ, start_response)
        return refuse_wsgi(decision, environ.get("REQUEST_METHOD", "GET"), start_response)
