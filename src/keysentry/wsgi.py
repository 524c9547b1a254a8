"""``KeySentryWSGIMiddleware``: verify API keys in front of any WSGI app (Flask, Django, …).

The WSGI twin of :class:`keysentry.asgi.KeySentryMiddleware`, with the same options. On
success the identity is at ``environ["keysentry.api_key"]`` (and, in Flask,
:data:`keysentry.flask.current_api_key`). Usage::

    flask_app.wsgi_app = KeySentryWSGIMiddleware(flask_app.wsgi_app, sentry=ks,
                                                 exclude=["/health"])

A WSGI server joins repeated ``Authorization`` headers into one value with ``", "``; such a
value has more than two words and is refused as ``invalid_key``, as two headers are in ASGI.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from keysentry._adapter import AdapterConfig, environ_var
from keysentry.core.decision import Decision, Reason
from keysentry.core.pipeline import RequestFacts, normal_method
from keysentry.service import KeySentry
from keysentry.types import StartResponse, WSGIApp

__all__ = ["ENVIRON_KEY", "KeySentryWSGIMiddleware", "environ_facts", "refusal_parts"]

#: Where the identity of a verified request is put in the WSGI environ.
ENVIRON_KEY = "keysentry.api_key"
logger = logging.getLogger("keysentry")


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
        self._api_key_var = environ_var(self.config.api_key_header)
        self._read_authorization = self.config.read_authorization

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        facts, preflight = environ_facts(environ, self._api_key_var, self._read_authorization)
        if self.config.unguarded(facts.method, facts.path, preflight):
            return self.app(environ, start_response)
        method, path = facts.method, facts.path
        try:
            if self.config.trusted_proxies:
                forwarded = environ.get("HTTP_X_FORWARDED_FOR")
                client_ip = self.config.client_ip(facts.client_ip, [forwarded] if forwarded else [])
                facts = facts._replace(client_ip=client_ip)
            decision = self.sentry.verify_request(facts, self.config.policy(method, path))
        except Exception:  # a bug must not become a 500 or an open door: refuse, log
            logger.exception("keysentry: verification failed unexpectedly; answering 503")
            decision = Decision.deny(Reason.UNAVAILABLE)
        if decision.allowed:
            environ[ENVIRON_KEY] = decision.identity
            if decision.headers:
                start_response = _with_headers(start_response, list(decision.headers))
            return self.app(environ, start_response)
        return _refuse(decision, method, start_response)


def environ_facts(
    environ: dict[str, Any], api_key_var: str | None = None, read_authorization: bool = True
) -> tuple[RequestFacts, bool]:
    """Gather what verification needs from a WSGI environ; also: is it a CORS preflight?

    The method is upper-cased here, in the environ too, so that the app serves the request
    by the method that was checked (werkzeug upper-cases it only later).
    """
    raw_method = environ.get("REQUEST_METHOD", "GET")
    method = normal_method(raw_method)
    if method is not raw_method and method:
        environ["REQUEST_METHOD"] = method
    authorization = environ.get("HTTP_AUTHORIZATION") if read_authorization else None
    api_key = environ.get(api_key_var) if api_key_var else None
    facts = RequestFacts(
        method=method,
        path=environ.get("PATH_INFO") or "/",
        authorization=(authorization,) if authorization is not None else (),
        api_key=(api_key,) if api_key is not None else (),
        client_ip=environ.get("REMOTE_ADDR"),
    )
    preflight = (
        method == "OPTIONS"
        and "HTTP_ORIGIN" in environ
        and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
    )
    return facts, preflight


def _with_headers(start_response: StartResponse, extra: list[tuple[str, str]]) -> StartResponse:
    """Add the rate-limit headers to the app's response."""

    def start_with_headers(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
        return start_response(status, [*headers, *extra], *args)

    return start_with_headers


def refusal_parts(decision: Decision) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status line, headers and body of a refusal, for WSGI and Flask."""
    status = HTTPStatus(decision.status)
    headers = [*decision.headers, ("content-length", str(len(decision.body)))]
    return f"{status.value} {status.phrase}", headers, decision.body


def _refuse(decision: Decision, method: str, start_response: StartResponse) -> list[bytes]:
    status, headers, body = refusal_parts(decision)
    start_response(status, headers)
    return [b""] if method == "HEAD" else [body]
