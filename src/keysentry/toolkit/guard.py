"""One handler's requirements checked against a request of any supported framework
(:class:`Guard`, behind ``ks.require`` and ``ks.depends``), and the rule every adapter keeps
when verification itself fails: refuse with 503, log, never a 500 and never an open door."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, cast

from starlette.requests import HTTPConnection

from keysentry.core.credits import is_amount
from keysentry.core.decision import Decision, Identity, Reason
from keysentry.core.patterns import pattern_problem
from keysentry.core.pipeline import (
    COMMON_METHODS,
    LookupKey,
    Policy,
    RequestFacts,
    admitted,
    authorize,
)
from keysentry.errors import ConfigurationError
from keysentry.toolkit.config import key_sources
from keysentry.toolkit.facts import (
    environ_facts,
    environ_var,
    scope_bearer,
    scope_facts,
    scope_header,
)
from keysentry.toolkit.identity import ENVIRON_KEY, attach, attach_environ
from keysentry.types import Scope

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = ["Guard", "Plan", "WSGIRequest", "is_connection", "unexpected_failure"]

logger = logging.getLogger("keysentry")
_UNAVAILABLE = Decision.deny(Reason.UNAVAILABLE)
Plan = Decision | tuple[RequestFacts, Policy, LookupKey | None]
_new = tuple.__new__  # builds a Policy (see core.pipeline)


class WSGIRequest(Protocol):
    """What a guard reads of a Flask (werkzeug) request."""

    @property
    def environ(self) -> dict[str, Any]: ...
    @property
    def view_args(self) -> dict[str, Any] | None: ...


_CONNECTIONS: dict[type, bool] = {}


def is_connection(value: object) -> TypeGuard[HTTPConnection]:
    """Whether *value* is a Starlette request (or WebSocket), by its type, remembered:
    ``isinstance`` against ``HTTPConnection``, an ABC through ``Mapping``, runs Python code
    on every call, and a handler's request is checked several times."""
    kind = type(value)
    known = _CONNECTIONS.get(kind)
    if known is None:
        known = _CONNECTIONS[kind] = isinstance(value, HTTPConnection)
    return known


def unexpected_failure() -> Decision:
    """Log the exception being handled and return the 503 verdict (call it in ``except``)."""
    logger.exception("keysentry: verification failed unexpectedly; answering 503")
    return _UNAVAILABLE


class Guard:
    """One handler's requirements, checked against a Starlette or Flask request.

    Raises:
        ConfigurationError: a malformed permission, resource template or header option.
    """

    def __init__(
        self,
        sentry: KeySentry,
        permissions: Sequence[str],
        resource: str | None = None,
        api_key_header: str | None = None,
        read_authorization: bool | None = None,
        cost: int = 1,
    ) -> None:
        if not is_amount(cost):
            raise ConfigurationError("require(cost=...) must be an integer >= 0")
        self.cost = cost
        for permission in permissions:
            problem = pattern_problem(permission)
            if problem:
                raise ConfigurationError(f"require({permission!r}): the permission {problem}")
        if resource is not None and not isinstance(resource, str):
            raise ConfigurationError("require(resource=...) must be a string template")
        self.sentry = sentry
        self.permissions = tuple(permissions)
        self.resource = resource
        self.api_key_header, self.read_authorization = key_sources(
            api_key_header, read_authorization
        )
        """Read the key from this header (lower-case), as the middleware option does."""
        self._scope_header = scope_header(self.api_key_header)
        # the one-step path reads Authorization alone: only where that is the key's one place
        self._one_step = self._scope_header is None and self.read_authorization
        self._environ_var = environ_var(self.api_key_header)

    def _resource(self, params: Mapping[str, Any] | None, path: str) -> str:
        return path[1:] if self.resource is None else self.resource.format_map(params or {})

    def plan(self, request: HTTPConnection | WSGIRequest) -> Plan:
        """A finished decision (identity already attached, a bad template, or the one-step
        path's verdict), or the facts and policy still to verify, with the key the one-step
        path found in the cache, if it did."""
        credential: bytes | None = None
        facts: RequestFacts | None = None
        if is_connection(request):
            scope = request.scope
            state = scope.get("state")
            identity = None if state is None else state.get("api_key")
            params = scope.get("path_params")  # the route's, for a resource template
            if identity is None and self._one_step and _plain_http(scope):
                credential = scope_bearer(scope)
            if credential is None:
                facts, _ = scope_facts(scope, self._scope_header, self.read_authorization)
            # with no mount prefix (_plain_http) the scope's path is the router's
            path: str = scope["path"] if facts is None else facts.path
        else:  # a Flask request
            flask = cast(WSGIRequest, request)  # is_connection narrows only the other branch
            identity = flask.environ.get(ENVIRON_KEY)
            params = flask.view_args
            facts, _ = environ_facts(flask.environ, self._environ_var, self.read_authorization)
            path = facts.path
        try:
            resource = self._resource(params, path)
        except (KeyError, IndexError, ValueError) as exc:
            logger.error("keysentry: resource template %r cannot be filled: %s", self.resource, exc)
            return _UNAVAILABLE
        if identity is not None:
            return authorize(identity, self.permissions, resource)
        policy = _new(Policy, (self.permissions, resource, self.cost))
        found: LookupKey | None = None
        if credential is not None:  # the one-step path, before any RequestFacts is built
            quick = self.sentry.verifier.quick(credential, path, policy)
            if type(quick) is Identity:
                return admitted(quick)
            if type(quick) is Decision:
                return quick
            found = quick
        if facts is None:  # left for the one-step path (HTTP only), which did not decide
            assert is_connection(request)
            facts, _ = scope_facts(request.scope, self._scope_header, self.read_authorization)
        return facts, policy, found

    def check(self, request: HTTPConnection | WSGIRequest) -> Decision:
        """Decide, verifying in this thread if needed; attach the identity if allowed."""
        plan = self.plan(request)
        if not isinstance(plan, Decision):
            try:
                plan = self.sentry.verifier.verify_request(*plan)
            except Exception:
                plan = unexpected_failure()
        return _attached(plan, request)

    async def acheck(self, request: HTTPConnection | WSGIRequest) -> Decision:
        """:meth:`check`, for async handlers (a store read runs in a worker thread)."""
        plan = self.plan(request)
        if not isinstance(plan, Decision):
            try:
                plan = await self.sentry.verifier.averify_request(*plan)
            except Exception:
                plan = unexpected_failure()
        return _attached(plan, request)


def _plain_http(scope: Scope) -> bool:
    """An HTTP request the one-step path may take: a common method, no mount prefix (its
    path is then the router's)."""
    return (
        scope["type"] == "http"
        and scope["method"] in COMMON_METHODS
        and scope["method"] != "OPTIONS"
        and not scope.get("root_path")
    )


def _attached(decision: Decision, request: HTTPConnection | WSGIRequest) -> Decision:
    identity = decision.identity
    if decision.allowed and identity is not None:
        if is_connection(request):
            attach(request.scope, identity)
        else:
            attach_environ(cast(WSGIRequest, request).environ, identity)
    return decision
