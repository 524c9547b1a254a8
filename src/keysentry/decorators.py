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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from keysentry.core.decision import Decision
from keysentry.toolkit.guard import Guard, WSGIRequest, is_connection
from keysentry.toolkit.render import add_verdict_headers, flask_refusal, refusal_response

if TYPE_CHECKING:
    from flask import Request as FlaskRequest
    from werkzeug.local import LocalProxy

    from keysentry.service import KeySentry

# Guard and refusal_response are the toolkit's, named here too
__all__ = ["Guard", "refusal_response", "require"]

F = TypeVar("F", bound=Callable[..., Any])
# FastAPI fills parameters from the signature; the wrapper adds this one to get the request.
_REQUEST_PARAM = "keysentry_request"
# ... and this one for the response whose headers FastAPI adds to what the handler returns
_RESPONSE_PARAM = "keysentry_response"


def _find_request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HTTPConnection | WSGIRequest:
    request = kwargs.pop(_REQUEST_PARAM, None)  # FastAPI's, asked for by our signature
    if request is not None and is_connection(request):
        return request
    for value in (*args, *kwargs.values()):
        if is_connection(value):
            return value
    from flask import request as flask_request  # only Flask handlers get here

    # Flask types its request as a Request; it is the proxy to one, which is unwrapped once
    return cast("LocalProxy[FlaskRequest]", flask_request)._get_current_object()


def _refusal(decision: Decision, request: HTTPConnection | WSGIRequest) -> Any:
    if is_connection(request):
        return refusal_response(decision)
    return flask_refusal(decision)


def _with_rate_headers(
    result: Any, decision: Decision, request: HTTPConnection | WSGIRequest, carrier: Response | None
) -> Any:
    """Add the verdict's rate-limit headers to what the handler returned: to a Starlette
    response as is; under FastAPI, to the response FastAPI passed in (*carrier*), whose
    headers it adds to whatever the handler returns (data included); to any Flask return
    value through ``make_response``."""
    if not (decision.rate_limits or decision.fixed_headers):  # what decision.headers builds from
        return result
    if is_connection(request):
        target = result if isinstance(result, Response) else carrier
        if target is not None:
            add_verdict_headers(target, decision)
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


class _Signed(Protocol):
    __signature__: inspect.Signature


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
    cast(_Signed, wrapper).__signature__ = signature.replace(parameters=params)


def require(
    sentry: KeySentry,
    permissions: Sequence[str],
    resource: str | None,
    api_key_header: str | None = None,
    read_authorization: bool | None = None,
    cost: int = 1,
) -> Callable[[F], F]:
    """Build the decorator behind :meth:`KeySentry.require`."""
    guard = Guard(sentry, permissions, resource, api_key_header, read_authorization, cost)

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
            return cast(F, async_wrapper)

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            carrier = kwargs.pop(_RESPONSE_PARAM, None)  # ours, not the handler's
            request = _find_request(args, kwargs)
            decision = guard.check(request)
            if not decision.allowed:
                return _refusal(decision, request)
            return _with_rate_headers(func(*args, **kwargs), decision, request, carrier)

        _with_request_param(sync_wrapper, func)
        return cast(F, sync_wrapper)

    return decorate
