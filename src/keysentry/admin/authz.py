"""Verification over HTTP, for services in other languages and for reverse proxies.

``POST /v1/authz/check`` takes Wacht's gateway request and answers the verdict as JSON (always
HTTP 200; the verdict is in the body). The caller needs a key of the admin app holding
``keysentry:verify``, unless the admin app was built with ``open_verification=True``.

``/v1/authz/forward`` is for nginx ``auth_request``, Traefik ``forwardAuth`` and Envoy
``ext_authz`` (HTTP mode): the proxy passes the client's headers, and the original method and
URI in ``X-Forwarded-Method``/``X-Forwarded-Uri`` (Traefik) or ``X-Original-Method``/
``X-Original-URI`` (nginx); Envoy appends the original path to the endpoint's
(``/v1/authz/forward/users/42``). The answer is 200 with identity headers, or the status,
headers and body keysentry's middleware would send. Query parameters, set in the proxy's
configuration: ``permission`` (repeatable), ``resource``, ``api_key_header`` (also read the
key from this header), and ``compat=nginx``: nginx passes only 401 and 403 on, so every other
refusal (429, 503, 400) is answered 403 then, the real status being in ``X-Keysentry-Status``.
Every refusal carries ``X-Keysentry-Status``, ``X-Keysentry-Reason`` and ``X-Keysentry-Error``
(the JSON body), for proxies that cannot pass a body on. The client's address (per-IP rate
limits) comes from ``X-Forwarded-For`` or ``X-Real-IP`` only when a trusted proxy calls
(``trusted_proxies``; this machine's loopback by default), as in the middleware.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from keysentry.admin import schemas as s
from keysentry.admin.auth import VERIFY_PERMISSION, authenticate
from keysentry.admin.http import HTTPProblem, problem_response, read_body
from keysentry.admin.openapi import Operation
from keysentry.core.decision import Decision, Identity
from keysentry.core.patterns import pattern_problem
from keysentry.core.pipeline import Policy, RequestFacts, normal_method
from keysentry.errors import KeySentryError, ValidationError
from keysentry.toolkit.guard import unexpected_failure
from keysentry.toolkit.proxies import Network, client_ip, parse_proxies

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = [
    "CHECK_PATH",
    "DEFAULT_TRUSTED_PROXIES",
    "FORWARD_PATH",
    "authz_routes",
    "identity_headers",
    "verdict",
]

CHECK_PATH = "/v1/authz/check"
FORWARD_PATH = "/v1/authz/forward"
#: Who may tell forward-auth the client's address: proxies on this machine.
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1")
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# printable ASCII but "%": header values are percent-encoded beyond that (no CR/LF ever)
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def verdict(decision: Decision) -> s.AuthzCheckResponse:
    """The JSON answer of ``/v1/authz/check`` for *decision*."""
    identity = decision.identity
    headers = {name: value for name, value in decision.headers if name != "content-type"}
    retry = headers.get("retry-after")
    return s.AuthzCheckResponse(
        allowed=decision.allowed,
        status=decision.status,
        reason=decision.reason.value,
        identity=None if identity is None else s.AuthzIdentity(
            key_id=identity.key_id, key_name=identity.key_name, app_slug=identity.app_slug,
            owner_user_id=identity.owner_user_id, organization_id=identity.organization_id,
            workspace_id=identity.workspace_id, expires_at=_iso(identity.expires_at),
        ),
        permissions=list(identity.permissions) if identity else [],
        metadata=dict(identity.metadata) if identity else {},
        rate_limits=[
            s.RateLimitState(policy=o.limit.name, limit=o.limit.max_requests,
                             remaining=o.remaining, reset=math.ceil(o.reset_ms / 1000))
            for o in (identity.rate_limits if identity else ())
        ],
        retry_after=int(retry) if retry else None,
        headers=headers,
    )  # fmt: skip


def identity_headers(identity: Identity) -> list[tuple[str, str]]:
    """``X-Keysentry-*`` headers describing a verified key, for the proxied service.

    Values outside printable ASCII (and ``%``) are percent-encoded.
    """
    fields = [
        ("x-keysentry-key-id", identity.key_id),
        ("x-keysentry-key-name", identity.key_name),
        ("x-keysentry-app-slug", identity.app_slug),
        ("x-keysentry-owner-user-id", identity.owner_user_id),
        ("x-keysentry-organization-id", identity.organization_id),
        ("x-keysentry-workspace-id", identity.workspace_id),
        ("x-keysentry-permissions", ",".join(identity.permissions)),
    ]
    return [(name, quote(value, safe=_SAFE)) for name, value in fields if value]


def _client_ip(request: Request, proxies: Sequence[Network]) -> str | None:
    # the middleware's rule: forwarding headers count only when a trusted proxy sent them
    headers = request.headers
    peer = request.client.host if request.client else None
    return client_ip(proxies, peer, headers.getlist("x-forwarded-for"), headers.get("x-real-ip"))


def _forward_facts(
    request: Request, proxies: Sequence[Network]
) -> tuple[RequestFacts, Policy, bool]:
    headers = request.headers
    query = request.query_params
    method = headers.get("x-forwarded-method") or headers.get("x-original-method")
    uri = headers.get("x-forwarded-uri") or headers.get("x-original-uri")
    if uri is None:
        uri = "/" + request.path_params.get("path", "")
    path = unquote(urlsplit(uri).path) or "/"
    permissions = tuple(query.getlist("permission"))
    for permission in permissions:
        problem = pattern_problem(permission)
        if problem:
            raise HTTPProblem(400, f"{permission!r} {problem}", field="permission")
    api_key_header = query.get("api_key_header")
    facts = RequestFacts(
        normal_method(method or request.method),
        path if path.startswith("/") else "/" + path,
        tuple(headers.getlist("authorization")),
        tuple(headers.getlist(api_key_header)) if api_key_header else (),
        _client_ip(request, proxies),
    )
    return facts, Policy(permissions, query.get("resource")), query.get("compat") == "nginx"


def _check_facts(body: s.AuthzCheckRequest) -> tuple[RequestFacts, Policy]:
    """The facts and policy of a ``/v1/authz/check`` body.

    Raises:
        ValidationError: ``client_ip`` is not an IP address.
    """
    if body.client_ip is not None:
        try:
            ipaddress.ip_address(body.client_ip)
        except ValueError:
            raise ValidationError.single("client_ip", "is not an IP address") from None
    resource = body.resource
    facts = RequestFacts(
        normal_method(body.method),
        resource if resource.startswith("/") else "/" + resource,
        (body.principal.value,),
        (),
        body.client_ip,
    )
    return facts, Policy(tuple(body.required_permissions))


def _forward_response(decision: Decision, nginx: bool) -> Response:
    """Forward-auth's answer: 200 with the identity's headers, or the refusal (nginx's
    auth_request passes on only 401 and 403, so it gets 403 for any other refusal)."""
    if decision.allowed:
        response = Response(status_code=200)
        assert decision.identity is not None
        extra = identity_headers(decision.identity)
    else:
        status = decision.status
        if nginx and status not in (401, 403):
            status = 403
        response = Response(decision.body, status)
        extra = [
            ("x-keysentry-status", str(decision.status)),
            ("x-keysentry-reason", decision.reason.value),
            ("x-keysentry-error", decision.body.decode("latin-1")),
        ]
    for name, value in [*decision.headers, *extra]:
        response.headers.append(name, value)
    return response


def authz_routes(
    ks: KeySentry,
    *,
    open_verification: bool = False,
    trusted_proxies: Sequence[str] = DEFAULT_TRUSTED_PROXIES,
) -> tuple[list[BaseRoute], dict[str, dict[str, Operation]]]:
    """The verification routes, and their entries for the OpenAPI document.

    Forward-auth takes the client's address (for per-IP rate limits) from
    ``X-Forwarded-For`` / ``X-Real-IP`` only when the caller is one of *trusted_proxies*
    (by default this machine's loopback, where nginx or Traefik usually call from).

    Raises:
        ConfigurationError: a trusted proxy that is not an address or network.
    """
    proxies = parse_proxies(trusted_proxies)

    async def check(request: Request) -> Response:
        if not open_verification:
            refusal = await authenticate(ks, request, VERIFY_PERMISSION)
            if refusal is not None:
                return refusal
        try:
            facts, policy = _check_facts(await read_body(request, s.AuthzCheckRequest))
        except (HTTPProblem, KeySentryError) as exc:
            return problem_response(exc)
        try:
            decision = await ks.averify_request(facts, policy)
        except Exception:  # a bug must not become a 500
            decision = unexpected_failure()
        return Response(verdict(decision).model_dump_json(), media_type="application/json")

    async def forward(request: Request) -> Response:
        try:
            facts, policy, nginx = _forward_facts(request, proxies)
        except HTTPProblem as exc:
            return problem_response(exc)
        try:
            decision = await ks.averify_request(facts, policy)
        except Exception:  # a bug must not become a 500 or an open door
            decision = unexpected_failure()
        return _forward_response(decision, nginx)

    routes: list[BaseRoute] = [
        Route(CHECK_PATH, check, methods=["POST"], name="authz_check"),
        Route(FORWARD_PATH, forward, methods=_METHODS, name="authz_forward"),
        Route(FORWARD_PATH + "/{path:path}", forward, methods=_METHODS, name="authz_forward_path"),
    ]
    operations: dict[str, dict[str, Any]] = {
        CHECK_PATH: {
            "post": (
                "May this request pass? (Wacht's gateway check)",
                s.AuthzCheckRequest,
                ("200", s.AuthzCheckResponse),
                (),
            )
        }
    }
    return routes, operations
