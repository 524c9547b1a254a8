"""FastAPI: ``Depends(ks.depends("users:read"))`` gives the handler the key's identity.

The dependency declares an HTTP bearer security scheme, so ``/docs`` shows the Authorize
button. A refusal raises :class:`KeySentryHTTPException` (a Starlette ``HTTPException`` with the
right status and headers); call :func:`install` once to answer it with keysentry's JSON body
(``{"errors": [...]}``) instead of FastAPI's ``{"detail": ...}``::

    from keysentry.fastapi import install
    install(app)

    @app.get("/users/{user_id}")
    async def get_user(user_id: int, key: Annotated[Identity, Depends(ks.depends("users:read"))]):
        ...
"""

# No "from __future__ import annotations": FastAPI evaluates string annotations in a
# dependency's function globals, and a callable instance (KeyDependency) has none
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated

from fastapi import FastAPI, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.base import SecurityBase
from starlette.exceptions import HTTPException
from starlette.responses import Response

from keysentry.core.decision import Decision, Identity
from keysentry.toolkit.guard import Guard
from keysentry.toolkit.render import add_verdict_headers, refusal_response

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = ["KeyDependency", "KeySentryHTTPException", "dependency", "install"]

_bearer = HTTPBearer(
    auto_error=False,  # keysentry answers, with its own reasons
    scheme_name="ApiKey",
    description="An API key issued by keysentry: `Authorization: Bearer <key>`.",
)


class KeySentryHTTPException(HTTPException):
    """A refused request, raised by the dependency. ``decision`` holds the full verdict."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(decision.status, decision.reason.message, headers=dict(decision.headers))


class KeyDependency(SecurityBase):
    """What :meth:`KeySentry.depends` returns when the key has one place to be (the
    ``Authorization`` header, or the named one): a dependency that is its own security
    scheme in OpenAPI. FastAPI then resolves one dependency a request; a scheme declared
    as a ``Security`` sub-dependency would be a second one, which cost more than the
    verification itself."""

    def __init__(self, guard: Guard, scheme: SecurityBase) -> None:
        self.guard = guard
        self.model = scheme.model
        self.scheme_name = scheme.scheme_name

    async def __call__(self, request: Request, response: Response) -> Identity:
        """Verify *request*'s key; the rate-limit headers go on *response*."""
        return await _checked(self.guard, request, response)


async def _checked(guard: Guard, request: Request, response: Response) -> Identity:
    decision = await guard.acheck(request)
    identity = decision.identity
    if not decision.allowed or identity is None:
        raise KeySentryHTTPException(decision)
    # FastAPI copies the headers of this response onto the handler's (rate limits, credits)
    add_verdict_headers(response, decision)
    return identity


def dependency(
    sentry: "KeySentry",
    permissions: Sequence[str],
    resource: str | None = None,
    api_key_header: str | None = None,
    read_authorization: bool | None = None,
    cost: int = 1,
) -> Callable[..., Awaitable[Identity]]:
    """Build the dependency behind :meth:`KeySentry.depends`."""
    guard = Guard(sentry, permissions, resource, api_key_header, read_authorization, cost)
    if guard.api_key_header is None:
        return KeyDependency(guard, _bearer)
    header_scheme = APIKeyHeader(
        name=api_key_header or "", auto_error=False, scheme_name="ApiKeyHeader",
        description=f"An API key issued by keysentry: `{api_key_header}: <key>`.",
    )  # fmt: skip
    if not guard.read_authorization:
        return KeyDependency(guard, header_scheme)

    # Either header: both schemes in OpenAPI, as Security parameters (only declared: the
    # guard reads the headers itself, with keysentry's rules)
    async def api_key_or_header(
        request: Request,
        response: Response,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        _header: Annotated[str | None, Security(header_scheme)],
    ) -> Identity:
        return await _checked(guard, request, response)

    return api_key_or_header


async def _handler(request: Request, exc: Exception) -> Response:
    decision = exc.decision if isinstance(exc, KeySentryHTTPException) else None
    if decision is None:  # registered for our class only; never happens
        raise exc
    return refusal_response(decision)


def install(app: FastAPI) -> None:
    """Answer refusals from :meth:`KeySentry.depends` with keysentry's JSON error body."""
    app.add_exception_handler(KeySentryHTTPException, _handler)
