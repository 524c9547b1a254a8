"""What a verification decides, and the values it decides with. Pure.

:class:`Reason` is the stable reason code (docs/design.md §5) with its HTTP status;
:class:`Decision` is the verdict; :class:`Identity` is what an allowed request carries into the
handler; :class:`KeyEntry` is a verified key compiled for the hot path (what the cache holds).
Error bodies use Wacht's shape and are built once per reason, so every 401 for a request
without a valid secret is the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from typing import Any, NamedTuple, final

from keysentry.core.credits import CreditPlan
from keysentry.core.headers import rate_headers
from keysentry.core.patterns import Grants
from keysentry.core.ratelimit import Limit, Outcome, static_checks

__all__ = ["Decision", "Identity", "KeyEntry", "Reason", "error_body"]


class Reason(StrEnum):
    """Stable reason codes; ``status`` is the HTTP status each one answers."""

    OK = "ok"
    MISSING_KEY = "missing_key"
    INVALID_KEY = "invalid_key"
    KEY_REVOKED = "key_revoked"
    KEY_EXPIRED = "key_expired"
    KEY_DISABLED = "key_disabled"
    APP_DISABLED = "app_disabled"
    PERMISSION_DENIED = "permission_denied"
    RESOURCE_DENIED = "resource_denied"
    IP_DENIED = "ip_denied"
    RATE_LIMITED = "rate_limited"
    USAGE_EXCEEDED = "usage_exceeded"
    INVALID_PATH = "invalid_path"
    INVALID_METHOD = "invalid_method"
    UNAVAILABLE = "unavailable"

    @property
    def status(self) -> int:
        """The HTTP status for this reason."""
        return _STATUS[self]

    @property
    def message(self) -> str:
        """A sentence for the error body."""
        return _MESSAGE[self]


_STATUS = {
    Reason.OK: 200,
    Reason.MISSING_KEY: 401,
    Reason.INVALID_KEY: 401,
    Reason.KEY_REVOKED: 403,
    Reason.KEY_EXPIRED: 403,
    Reason.KEY_DISABLED: 403,
    Reason.APP_DISABLED: 403,
    Reason.PERMISSION_DENIED: 403,
    Reason.RESOURCE_DENIED: 403,
    Reason.IP_DENIED: 403,
    Reason.RATE_LIMITED: 429,
    Reason.USAGE_EXCEEDED: 429,
    Reason.INVALID_PATH: 400,
    Reason.INVALID_METHOD: 400,
    Reason.UNAVAILABLE: 503,
}
_MESSAGE = {
    Reason.OK: "ok",
    Reason.MISSING_KEY: "An API key is required: send 'Authorization: Bearer <key>'.",
    Reason.INVALID_KEY: "The API key is not valid.",
    Reason.KEY_REVOKED: "This API key has been revoked.",
    Reason.KEY_EXPIRED: "This API key has expired.",
    Reason.KEY_DISABLED: "This API key is disabled.",
    Reason.APP_DISABLED: "The app this API key belongs to is disabled.",
    Reason.PERMISSION_DENIED: "This API key lacks a required permission.",
    Reason.RESOURCE_DENIED: "This API key may not access this resource.",
    Reason.IP_DENIED: "This API key may not be used from this address.",
    Reason.RATE_LIMITED: "Too many requests.",
    Reason.USAGE_EXCEEDED: "This API key has no credits left.",
    Reason.INVALID_PATH: "The request path has empty or dot segments.",
    Reason.INVALID_METHOD: "The request method is not a valid HTTP method.",
    Reason.UNAVAILABLE: "API key verification is temporarily unavailable.",
}


def error_body(reason: Reason, detail: str | None = None) -> bytes:
    """Wacht's error shape: ``{"errors": [{"message", "code", "reason"}]}``."""
    message = reason.message if detail is None else f"{reason.message} {detail}"
    error = {"message": message, "code": reason.status, "reason": reason.value}
    return json.dumps({"errors": [error]}, separators=(",", ":")).encode()


_BODIES: dict[Reason, bytes] = {r: error_body(r) for r in Reason if r is not Reason.OK}
_JSON = ("content-type", "application/json")
_HEADERS: dict[Reason, tuple[tuple[str, str], ...]] = {
    reason: (_JSON,) for reason in Reason if reason is not Reason.OK
}
# RFC 6750: a 401 names the scheme; a presented but unusable token is "invalid_token".
_HEADERS[Reason.MISSING_KEY] = (_JSON, ("www-authenticate", "Bearer"))
_HEADERS[Reason.INVALID_KEY] = (_JSON, ("www-authenticate", 'Bearer error="invalid_token"'))


_new_object = object.__new__  # module globals: "object.__new__" looks up an attribute
_set_attribute = object.__setattr__


@final
@dataclass(frozen=True)
class Identity:
    """Who an allowed request is: handed to the handler by every adapter.

    ``permissions`` are the key's effective permission patterns: its own (or, when it has
    none, its app's) plus its organization- and workspace-role permissions.
    """

    key_id: str
    key_name: str
    app_slug: str
    permissions: tuple[str, ...]
    resources: tuple[str, ...]
    metadata: Mapping[str, Any]
    owner_user_id: str | None = None
    organization_id: str | None = None
    workspace_id: str | None = None
    expires_at: float | None = None
    credits_remaining: int | None = None
    """The key's credits left after this request (``None``: the key has no credit limit)."""
    rate_limits: tuple[Outcome, ...] = ()
    """The outcome of each rate-limit rule for this request (``core.ratelimit.Outcome``):
    ``limit``, ``allowed``, ``remaining``, ``reset_ms``."""
    grants: Grants = field(init=False, repr=False, compare=False)
    """The compiled permission patterns: built once per key, the same object for every
    per-request copy of this identity (so adapters can cache what they derive from it)."""
    _resources: Grants = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grants", Grants(self.permissions))
        object.__setattr__(self, "_resources", Grants(self.resources))
        # a dict of its own from the start: with_rate_limits reads __dict__, which would make
        # one sharing the class's keys, and CPython 3.11 reads no attribute of such an
        # instance by its specialized path (nor copies that dict by its fast one)
        object.__setattr__(self, "__dict__", dict(self.__dict__))

    def with_rate_limits(self, rate_limits: tuple[Outcome, ...]) -> Identity:
        """A copy carrying this request's rate-limit outcomes.

        Copies the instance dict: ``dataclasses.replace`` would run ``__init__`` (and
        recompile the patterns) on every rate-limited request.
        """
        state = self.__dict__.copy()
        state["rate_limits"] = rate_limits
        clone = _new_object(Identity)
        _set_attribute(clone, "__dict__", state)  # one dict, not an empty one then filled
        return clone

    def with_credits(self, remaining: int, rate_limits: tuple[Outcome, ...]) -> Identity:
        """A copy carrying the credits left and this request's rate-limit outcomes."""
        clone = self.with_rate_limits(rate_limits)
        clone.__dict__["credits_remaining"] = remaining  # the copy's own dict, not shared
        return clone

    @property
    def sharing(self) -> tuple[str | None, str | None, str | None]:
        """``(owner_user_id, organization_id, workspace_id)``: whose counters the
        ``per_owner`` / ``per_organization`` / ``per_workspace`` rules count against."""
        return (self.owner_user_id, self.organization_id, self.workspace_id)

    def has_permission(self, permission: str) -> bool:
        """Whether one of this key's patterns grants *permission*."""
        return self.grants.allows(permission)

    def has_resource(self, resource: str) -> bool:
        """Whether one of the app's resource patterns grants *resource*."""
        return self._resources.allows(resource)


@final
@dataclass(frozen=True, slots=True)
class KeyEntry:
    """A stored key compiled for verification; what the in-process cache holds.

    Times are Unix timestamps. ``previous_digest`` is the old secret's hash during a
    rotation grace period, valid until ``previous_until``.
    """

    digest: str
    identity: Identity
    revoked: bool = False
    active: bool = True
    app_active: bool = True
    expires_at: float | None = None
    previous_digest: str | None = None
    previous_until: float | None = None
    limits: tuple[Limit, ...] = field(default=())
    """Compiled rate-limit rules, highest priority first."""
    networks: tuple[IPv4Network | IPv6Network, ...] | None = None
    """Where the key may be used from (its own allowlist, else its app's); ``None``: anywhere."""
    credits: CreditPlan | None = None
    """The key's credits (``None``: no credit limit)."""
    allowed: Decision = field(init=False, repr=False, compare=False)
    checks: tuple[tuple[Limit, str], ...] | None = field(init=False, repr=False, compare=False)
    """The counters every request with this key counts against, when that does not depend
    on the request (no rule per endpoint or per IP); else ``None``."""
    usable: bool = field(init=False, repr=False, compare=False)
    """Not revoked, active, and its app active (expiry is checked per request)."""
    plain: bool = field(init=False, repr=False, compare=False)
    """Usable, with no credits, no allowlist and the same counters for every request: what
    the verifier's one-step path (``Verifier.quick``) handles; any other key takes the
    general one."""
    verdicts: dict[tuple[tuple[str, ...], str | None, str], Decision] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """``(permissions, resource, path)`` -> the verdict of steps 5-6 for this key (the path
    when no resource is asked for: the resource is then the path), filled by
    ``permitted`` (bounded). A changed key is a new entry, so nothing here goes stale."""

    def __post_init__(self) -> None:
        identity = self.identity
        usable = not self.revoked and self.active and self.app_active
        object.__setattr__(self, "usable", usable)
        object.__setattr__(self, "allowed", Decision.allow(identity))
        checks = static_checks(self.limits, identity.key_id, identity.app_slug, identity.sharing)
        object.__setattr__(self, "checks", checks)
        plain = usable and checks is not None and self.networks is None and self.credits is None
        object.__setattr__(self, "plain", plain)


@final
class Decision(NamedTuple):
    """The verdict on one request.

    A NamedTuple: one is built for every rate-limited request, and a frozen dataclass costs
    more to build.

    Attributes:
        allowed: whether the request may reach the handler.
        reason: the stable reason code (``Reason.OK`` when allowed).
        identity: the key's identity when its secret verified (also on most 403s).
        fixed_headers: the verdict's own response headers (content type,
            ``WWW-Authenticate``, a 503's ``Retry-After``), lower-case names.
        body: the error body for a refusal (empty when allowed).
        rate_limits: the outcome of each rate-limit rule this request counted against
            (``core.ratelimit.Outcome``), from which :attr:`headers` adds the rate-limit
            headers; adapters that want bytes render them from here directly.
    """

    allowed: bool
    reason: Reason
    identity: Identity | None = None
    fixed_headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    rate_limits: tuple[Outcome, ...] = ()

    @property
    def status(self) -> int:
        """The HTTP status: 200 when allowed."""
        return self.reason.status

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Every response header of this verdict: :attr:`fixed_headers`, then the
        rate-limit headers (and a 429's ``Retry-After``) from :attr:`rate_limits`."""
        if not self.rate_limits:
            return self.fixed_headers
        return self.fixed_headers + rate_headers(self.rate_limits, not self.allowed)

    @classmethod
    def allow(cls, identity: Identity) -> Decision:
        """An allowed request."""
        return cls(True, Reason.OK, identity)

    @classmethod
    def deny(
        cls,
        reason: Reason,
        identity: Identity | None = None,
        detail: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        rate_limits: tuple[Outcome, ...] = (),
    ) -> Decision:
        """A refused request; *detail* is appended to the message (only after the secret
        verified, so it tells a probe nothing); *headers* are sent too (a 503's
        ``Retry-After``), and so are the rate-limit headers of *rate_limits*."""
        if identity is None and detail is None and not headers and not rate_limits:
            return _DENIALS[reason]  # built once per reason: every such 401 is one object
        body = _BODIES[reason] if detail is None else error_body(reason, detail)
        return cls(False, reason, identity, _HEADERS[reason] + headers, body, rate_limits)


_DENIALS: dict[Reason, Decision] = {
    reason: Decision(False, reason, None, _HEADERS[reason], _BODIES[reason], ())
    for reason in Reason
    if reason is not Reason.OK
}
