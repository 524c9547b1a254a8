"""A request's facts (:class:`~keysentry.core.pipeline.RequestFacts`) from an ASGI scope or a
WSGI environ, in one pass each."""

from __future__ import annotations

from typing import Any

from keysentry.core.pipeline import RequestFacts, normal_method
from keysentry.types import Scope

__all__ = ["environ_facts", "environ_var", "scope_bearer", "scope_facts", "scope_header"]

_new = tuple.__new__  # builds the RequestFacts of each request (see core.pipeline)


def scope_header(header: str | None) -> bytes | None:
    """A checked header name as it appears in an ASGI scope's headers."""
    return header.encode("latin-1") if header else None


def environ_var(header: str | None) -> str | None:
    """A checked header name as its WSGI environ variable (``HTTP_X_API_KEY``)."""
    return "HTTP_" + header.upper().replace("-", "_") if header else None


def scope_bearer(scope: Scope) -> bytes | None:
    """The bearer token of a request with exactly one ``Authorization`` header, as its bytes:
    what the one-step path (:meth:`~keysentry.verification.driver.Verifier.quick`) takes.
    ``None`` for no header, two, or another scheme: the general path decides those."""
    credential: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if credential is not None:
                return None
            credential = value
    if credential is not None and credential.startswith(b"Bearer "):
        return credential[7:]
    return None


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
    auth_name = b"authorization" if read_authorization else None
    options = method == "OPTIONS"
    for name, value in scope["headers"]:
        if name == auth_name:
            authorization += (value.decode("latin-1"),)
        elif name == api_key_header:
            api_key += (value.decode("latin-1"),)
        elif options and (name == b"origin" or name == b"access-control-request-method"):
            preflight_headers += 1
    client = scope.get("client")
    client_ip = client[0] if client else None
    facts = _new(RequestFacts, (method, path, authorization, api_key, client_ip))
    return facts, preflight_headers >= 2 and method == "OPTIONS"


def environ_facts(
    environ: dict[str, Any], api_key_var: str | None = None, read_authorization: bool = True
) -> tuple[RequestFacts, bool]:
    """Gather what verification needs from a WSGI environ; also: is it a CORS preflight?

    The method is upper-cased here, in the environ too, so that the app serves the request
    by the method that was checked (werkzeug upper-cases it only later). A WSGI server
    joins repeated headers into one value with ``", "``: two ``Authorization`` headers then
    read as one value of more than two words, refused as ``invalid_key`` like two in ASGI.
    """
    raw_method = environ.get("REQUEST_METHOD", "GET")
    method = normal_method(raw_method)
    if method is not raw_method and method:
        environ["REQUEST_METHOD"] = method
    authorization = environ.get("HTTP_AUTHORIZATION") if read_authorization else None
    api_key = environ.get(api_key_var) if api_key_var else None
    facts = _new(
        RequestFacts,
        (
            method,
            environ.get("PATH_INFO") or "/",
            (authorization,) if authorization is not None else (),
            (api_key,) if api_key is not None else (),
            environ.get("REMOTE_ADDR"),
        ),
    )
    preflight = (
        method == "OPTIONS"
        and "HTTP_ORIGIN" in environ
        and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
    )
    return facts, preflight
