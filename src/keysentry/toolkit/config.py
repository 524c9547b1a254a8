"""Adapter options, checked and compiled once, shared by every middleware and decorator."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from keysentry.core.credits import is_amount
from keysentry.core.patterns import (
    EndpointPattern,
    ResourceTemplate,
    matches,
    parse_endpoint,
    parse_resource_template,
    pattern_problem,
)
from keysentry.core.pipeline import Policy, path_problem
from keysentry.errors import ConfigurationError
from keysentry.settings import check_flag
from keysentry.toolkit.proxies import Network, client_ip, is_trusted, parse_proxies

__all__ = ["AdapterConfig", "header_name", "key_sources"]

_NO_REQUIREMENTS = Policy()
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)
_ROUTE_CACHE_SIZE = 4096


def header_name(value: object, option: str = "api_key_header") -> str | None:
    """Check an optional header name; return it lower-case (as ASGI servers give them).

    Raises:
        ConfigurationError: not a valid header name.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ConfigurationError(f"{option} must be a header name such as 'X-API-Key'")
    if value.lower() in ("authorization", "cookie"):
        raise ConfigurationError(f"{option}: {value!r} cannot be used (Authorization is read "
                                 "by default; a key in a cookie is not supported)")  # fmt: skip
    return value.lower()


def key_sources(api_key_header: object, read_authorization: object) -> tuple[str | None, bool]:
    """Check the two options that say where the key is read; return the header name
    (lower-case) and whether ``Authorization`` is read too.

    With a key header only that header is read unless *read_authorization* is ``True``;
    without one, ``Authorization`` is always read.

    Raises:
        ConfigurationError: a bad header name, or ``read_authorization=False`` with no header.
    """
    header = header_name(api_key_header)
    if read_authorization is None:
        return header, header is None
    if not isinstance(read_authorization, bool):
        raise ConfigurationError("read_authorization must be True, False or None")
    if not read_authorization and header is None:
        raise ConfigurationError(
            "read_authorization=False needs an api_key_header to read the key from"
        )
    return header, read_authorization


def _permission_list(endpoint: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]  # {"GET /x": "x:read"} means one permission, not four letters
    if not isinstance(value, Iterable):
        raise ConfigurationError(f"permissions[{endpoint!r}] must be a list of permissions")
    perms = tuple(value)
    for perm in perms:
        problem = pattern_problem(perm)
        if problem:
            raise ConfigurationError(f"permissions[{endpoint!r}]: {perm!r} {problem}")
    return perms


@dataclass(frozen=True, slots=True)
class AdapterConfig:
    """What a middleware checks, compiled from its keyword arguments.

    Args:
        exclude: path patterns that pass without a key (``"/health"``, ``"/docs*"``).
        permissions: endpoint pattern -> permissions required there; a request needs the
            permissions of every pattern it matches.
        api_key_header: read the key from this header (e.g. ``"X-API-Key"``) instead of
            ``Authorization``, which then stays the app's own (its bearer tokens pass
            untouched).
        read_authorization: also read ``Authorization: Bearer`` when *api_key_header* is
            set (the two must then agree); without *api_key_header* it is always read.
        allow_preflight: let CORS preflight requests (``OPTIONS`` with ``Origin`` and
            ``Access-Control-Request-Method``) through without a key (default ``True``).
        trusted_proxies: addresses or networks (``"10.0.0.0/8"``) of the reverse proxies in
            front of the app. Only a request from one of them has its client address taken
            from ``X-Forwarded-For`` (the right-most address that is not a trusted proxy),
            for per-IP rate limits; any other peer is the client itself.
        resources: route -> resource template, e.g. ``{"/v1/users/{user_id}/*":
            "users/{user_id}"}``: the resource checked against the app's resource patterns
            (the first route that matches; by default the path without its leading ``/``).
    """

    exclude: tuple[str, ...]
    rules: tuple[tuple[EndpointPattern, tuple[str, ...]], ...]
    api_key_header: str | None
    allow_preflight: bool
    trusted_proxies: tuple[Network, ...] = ()
    resources: tuple[ResourceTemplate, ...] = ()
    read_authorization: bool = True
    costs: tuple[tuple[EndpointPattern, int], ...] = ()
    # (method, path) -> what route() answers, for recently seen requests: matching every
    # pattern costs microseconds, a dict hit a tenth of one. Bounded; cleared when full.
    _routes: dict[tuple[str, str], Policy | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def build(
        cls,
        *,
        exclude: Sequence[str] = (),
        permissions: Mapping[str, Sequence[str] | str] | None = None,
        api_key_header: str | None = None,
        # the two flags typed as what a caller may really pass: compiled, a bool annotation
        # is checked by the call, with a TypeError that does not name them
        allow_preflight: object = True,
        trusted_proxies: Sequence[str] = (),
        resources: Mapping[str, str] | None = None,
        read_authorization: object = None,
        costs: Mapping[str, int] | None = None,
    ) -> AdapterConfig:
        """Validate and compile the options (*costs*: route -> credits a request spends;
        others spend 1).

        Raises:
            ConfigurationError: a malformed option, naming it.
        """
        header, reads_authorization = key_sources(api_key_header, read_authorization)
        preflight = check_flag("allow_preflight", allow_preflight)
        if permissions is not None and not isinstance(permissions, Mapping):
            raise ConfigurationError(
                "permissions must map routes to permissions, e.g. {'GET /users/*': ['users:read']}"
            )
        return cls(
            _excluded(exclude), _rules(permissions), header, preflight,
            parse_proxies(trusted_proxies), _templates(resources), reads_authorization,
            _prices(costs),
        )  # fmt: skip

    @property
    def seen(self) -> dict[tuple[str, str], Policy | None]:
        """What :meth:`route` answered for the ``(method, path)`` pairs it has seen lately
        (a method as :func:`~keysentry.core.pipeline.normal_method` gives it; a preflight
        is never answered from here). Read it, do not write it."""
        return self._routes

    def is_trusted(self, address: str) -> bool:
        """Whether *address* is one of the trusted proxies."""
        return is_trusted(self.trusted_proxies, address)

    def client_ip(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The client's address by the trusted-proxy rule (:func:`.proxies.client_ip`)."""
        return client_ip(self.trusted_proxies, peer, forwarded_for)

    def unguarded(self, method: str, path: str, preflight: bool) -> bool:
        """Whether the request passes without a key: an excluded path, or a CORS preflight
        when those are allowed. Never for a bad method or a path with dot or empty segments
        (``/public/../admin``): those go on to verification, which refuses them with 400."""
        if not method or (("//" in path or "." in path) and path_problem(path)):
            return False
        if preflight and self.allow_preflight:
            return True
        exclude = self.exclude
        return bool(exclude) and any(matches(pattern, path) for pattern in exclude)

    def route(self, method: str, path: str, preflight: bool = False) -> Policy | None:
        """What a request to *method* *path* must satisfy, or ``None`` when it passes
        without a key (:meth:`unguarded`). Remembered per ``(method, path)``."""
        if preflight and self.unguarded(method, path, True):
            return None
        routes = self._routes
        try:
            return routes[method, path]
        except KeyError:
            pass
        policy = None if self.unguarded(method, path, False) else self.policy(method, path)
        if len(routes) >= _ROUTE_CACHE_SIZE:
            routes.clear()  # a dict's operations are atomic: safe from any thread
        routes[method, path] = policy
        return policy

    def policy(self, method: str, path: str) -> Policy:
        """What a request to *method* *path* must satisfy (not remembered: see
        :meth:`route`)."""
        required = self.required(method, path)
        resource = self.resource(method, path)
        cost = next((c for pattern, c in self.costs if pattern.matches(method, path)), 1)
        if required or resource is not None or cost != 1:
            return Policy(required, resource, cost)
        return _NO_REQUIREMENTS

    def resource(self, method: str, path: str) -> str | None:
        """The resource of a request to *method* *path* by the first matching template, or
        ``None`` (then it is the path)."""
        for template in self.resources:
            resource = template.fill(method, path)
            if resource is not None:
                return resource
        return None

    def required(self, method: str, path: str) -> tuple[str, ...]:
        """The permissions a request to *method* *path* needs."""
        matched = [perms for pattern, perms in self.rules if pattern.matches(method, path)]
        if len(matched) <= 1:
            return matched[0] if matched else ()
        return tuple(dict.fromkeys(p for perms in matched for p in perms))


def _excluded(exclude: Sequence[str]) -> tuple[str, ...]:
    if isinstance(exclude, str):
        exclude = [exclude]
    elif not isinstance(exclude, Iterable):
        raise ConfigurationError("exclude must be a list of paths such as ['/health']")
    excluded = []
    for path in exclude:
        if not isinstance(path, str) or not (path.startswith("/") or path == "*"):
            raise ConfigurationError(f"exclude: {path!r} must be a path such as '/health'")
        excluded.append(path)
        if len(path) > 1 and not path.endswith(("/", "*")):
            excluded.append(path + "/")  # "/health" covers "/health/" too
    return tuple(excluded)


def _rules(
    permissions: Mapping[str, Sequence[str] | str] | None,
) -> tuple[tuple[EndpointPattern, tuple[str, ...]], ...]:
    rules = []
    for endpoint, perms in (permissions or {}).items():
        try:
            pattern = parse_endpoint(endpoint)
        except ValueError as exc:
            raise ConfigurationError(f"permissions: {exc}") from None
        rules.append((pattern, _permission_list(endpoint, perms)))
    return tuple(rules)


def _templates(resources: Mapping[str, str] | None) -> tuple[ResourceTemplate, ...]:
    if resources is not None and not isinstance(resources, Mapping):
        raise ConfigurationError("resources must map routes to resource templates")
    templates = []
    # typed as what a caller may really pass: compiled, a str annotation is checked
    pairs: Sequence[tuple[object, object]] = tuple((resources or {}).items())
    for route, resource in pairs:
        try:
            templates.append(parse_resource_template(route, resource))
        except ValueError as exc:
            raise ConfigurationError(f"resources: {exc}") from None
    return tuple(templates)


def _prices(costs: Mapping[str, int] | None) -> tuple[tuple[EndpointPattern, int], ...]:
    if costs is not None and not isinstance(costs, Mapping):
        raise ConfigurationError("costs must map routes to credits, e.g. {'POST /v1/x': 10}")
    priced = []
    # typed as what a caller may really pass: compiled, an int annotation is checked
    prices: Sequence[tuple[object, object]] = tuple((costs or {}).items())
    for route, price in prices:
        if not isinstance(route, str):
            raise ConfigurationError(f"costs: {route!r} is not a route pattern")
        try:
            pattern = parse_endpoint(route)
        except ValueError as exc:
            raise ConfigurationError(f"costs: {exc}") from None
        if not is_amount(price):
            raise ConfigurationError(f"costs: {route!r} must cost an integer >= 0")
        priced.append((pattern, price))
    return tuple(priced)
