"""``ks.require(*permissions, resource=None)``: protect one handler (Starlette, FastAPI, Flask).

If a keysentry middleware already verified the request, only the handler's own permissions and
resource are checked against the attached identity; otherwise the decorator verifies the key
itself and attaches the identity (``request.state.api_key``, ``current_api_key``).
A refusal is answered with the same status, headers and JSON body as the middleware's.

``resource`` may be a template filled from the route's path parameters:
``@ks.require("users:read", resource="users/{user_id}")``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from keysentry._adapter import environ_var, header_name, scope_header
from keysentry.asgi import attach, scope_facts
from keysentry.core.decision import Decision, Reason
from keysentry.core.patterns import pattern_problem
from keysentry.core.pipeline import Policy, RequestFacts, authorize
from keysentry.errors import ConfigurationError
from keysentry.wsgi import ENVIRON_KEY, environ_facts, refusal_parts

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = ["Guard", "refusal_response", "require"]

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("keysentry")
# FastAPI fills parameters from the signature; the wrapper adds this one to get the request.
_REQUEST_PARAM = "keysentry_request"
# ... and this one for the response whose headers FastAPI adds to what the handler returns
_RESPONSE_PARAM = "keysentry_response"
Plan = Decision | tuple[RequestFacts, Policy]


class Guard:
    """One handler's requirements, checked against a request of any supported framework."""

    def __init__(
        self,
        sentry: KeySentry,
        permissions: Sequence[str],
        resource: str | None = None,
        api_key_header: str | None = None,
        read_authorization: bool | None = None,
    ) -> None:
        for permission in permissions:
            problem = pattern_problem(permission)
            if problem:
                raise ConfigurationError(f"require({permission!r}): the permission {problem}")
        if resource is not None and not isinstance(resource, str):
            raise ConfigurationError("require(resource=...) must be a string template")
        self.sentry = sentry
        self.permissions = tuple(permissions)
        self.resource = resource
        self.api_key_header = header_name(api_key_header)
        """Read the key from this header (lower-case), as the middleware option does."""
        if read_authorization is None:
            read_authorization = self.api_key_header is None
        elif not isinstance(read_authorization, bool) or (
            not read_authorization and self.api_key_header is None
        ):
            raise ConfigurationError(
                "read_authorization must be True, or False with an api_key_header"
            )
        self.read_authorization = read_authorization
        self._scope_header = scope_header(self.api_key_header)
        self._environ_var = environ_var(self.api_key_header)

    def _resource(self, params: dict[str, Any], path: str) -> str:
        return path[1:] if self.resource is None else self.resource.format_map(params)

    def plan(self, request: object) -> Plan:
        """A finished decision (identity already attached, or a bad template), or the facts
        and policy still to verify."""
        if isinstance(request, HTTPConnection):
            identity = request.scope.get("state", {}).get("api_key")
            params: dict[str, Any] = dict(request.path_params)
            facts, _ = scope_facts(request.scope, self._scope_header, self.read_authorization)
        else:  # a Flask request
            identity = request.environ.get(ENVIRON_KEY)  # type: ignore[attr-defined]
            params = dict(request.view_args or {})  # type: ignore[attr-defined]
            facts, _ = environ_facts(
                request.environ,  # type: ignore[attr-defined]
                self._environ_var,
                self.read_authorization,
            )
        try:
            resource = self._resource(params, facts.path)
        except (KeyError, IndexError, ValueError) as exc:
            logger.error("keysentry: resource template %r cannot be filled: %s", self.resource, exc)
            return Decision.deny(Reason.UNAVAILABLE)
        if identity is not None:
            return authorize(identity, self.permissions, resource)
        return facts, Policy(self.permissions, resource)

    def check(self, request: object) -> Decision:
        """Decide, verifying in this thread if needed."""
        plan = self.plan(request)
        decision = plan if isinstance(plan, Decision) else self.sentry.verify_request(*plan)
        return _attached(decision, request)

    async def acheck(self, request: object) -> Decision:
        """Decide, for async handlers."""
        plan = self.plan(request)
        if isinstance(plan, Decision):
            return _attached(plan, request)
        return _attached(await self.sentry.averify_request(*plan), request)


def _attached(decision: Decision, request: object) -> Decision:
    if decision.allowed and decision.identity is not None:
        if isinstance(request, HTTPConnection):
            attach(request.scope, decision.identity)
        else:
            request.environ[ENVIRON_KEY] = decision.identity  # type: ignore[attr-defined]
    return decision


def _find_request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    request = kwargs.pop(_REQUEST_PARAM, None)
    if request is not None:
        return request
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    from flask import request as flask_request  # only Flask handlers get here

    return flask_request._get_current_object()  # type: ignore[attr-defined]


def refusal_response(decision: Decision) -> Response:
    """The Starlette response for a refused request: the middleware's status, headers and
    JSON body."""
    return Response(decision.body, decision.status, headers=dict(decision.headers))


def _refusal(decision: Decision, request: object) -> Any:
    if isinstance(request, HTTPConnection):
        return refusal_response(decision)
    from flask import Response as FlaskResponse

    status, headers, body = refusal_parts(decision)
    return FlaskResponse(body, status, headers)


def _with_rate_headers(
    result: Any, decision: Decision, request: object, carrier: Response | None
) -> Any:
    """Add the verdict's rate-limit headers to what the handler returned: to a Starlette
    response as is; under FastAPI, to the response FastAPI passed in (*carrier*), whose
    headers it adds to whatever the handler returns (data included); to any Flask return
    value through ``make_response``."""
    if not decision.headers:
        return result
    if isinstance(request, HTTPConnection):
        target = result if isinstance(result, Response) else carrier
        if target is not None:
            for name, value in decision.headers:
                target.headers[name] = value
        return result
    from flask import make_response

    response = make_response(result)
    response.headers.extend(decision.headers)
    return response


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - async callable objects
    )


def _with_request_param(wrapper: Callable[..., Any], func: Callable[..., Any]) -> None:
    """Let FastAPI pass the Request even when the handler does not ask for it, and a
    Response to carry the rate-limit headers (Starlette and Flask ignore the signature)."""
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    extra = [inspect.Parameter(_RESPONSE_PARAM, inspect.Parameter.KEYWORD_ONLY,
                               annotation=Response)]  # fmt: skip
    if not any(p.annotation in (Request, "Request") for p in params):
        extra.append(
            inspect.Parameter(_REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        )
    position = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    params[position:position] = extra
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]


def require(
    sentry: KeySentry,
    permissions: Sequence[str],
    resource: str | None,
    api_key_header: str | None = None,
    read_authorization: bool | None = None,
) -> Callable[[F], F]:
    """Build the decorator behind :meth:`KeySentry.require`."""
    guard = Guard(sentry, permissions, resource, api_key_header, read_authorization)

    def decorate(func: F) -> F:
        if _is_async(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                carrier = kwargs.pop(_RESPONSE_PARAM, None)  # ours, not the handler's
                request = _find_request(args, kwargs)
                decision = await guard.acheck(request)
                if not decision.allowed:
                    return _refusal(decision, request)
                result = await func(*args, **kwargs)
                return _with_rate_headers(result, decision, request, carrier)

            _with_request_param(async_wrapper, func)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            carrier = kwargs.pop(_RESPONSE_PARAM, None)  # ours, not the handler's
            request = _find_request(args, kwargs)
            decision = guard.check(request)
            if not decision.allowed:
                return _refusal(decision, request)
            return _with_rate_headers(func(*args, **kwargs), decision, request, carrier)

        _with_request_param(sync_wrapper, func)
        return sync_wrapper  # type: ignore[return-value]

    return decorate
