"""The records keysentry manages: apps, keys, rate-limit schemes and rules, events.

Field names follow Wacht's API (``reference/000`` and ``001``). Models are pydantic v2,
frozen, and reject unknown fields. ``key_hash`` lives only on :class:`KeyRecord`, the store's
internal form, and is excluded from its ``repr`` and ``model_dump``; every public read returns
an :class:`ApiKey`, which has no such field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    Field,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from keysentry._fields import (
    MAX_LIST_LENGTH,
    AppSlug,
    IpNetworks,
    KeyPrefix,
    Metadata,
    Name,
    Patterns,
    SchemeSlug,
    ScopeId,
    Text,
    UtcDatetime,
    _Model,
    build,
)
from keysentry.core.credits import MAX_CREDITS, CreditPlan
from keysentry.core.patterns import parse_endpoint
from keysentry.errors import ValidationError

__all__ = [
    "MAX_CREDITS",
    "MAX_GRACE_SECONDS",
    "MODES",
    "PORTAL_TTL_RANGE",
    "UNITS",
    "ApiAuthApp",
    "ApiKey",
    "CreditRefill",
    "Event",
    "IssuedKey",
    "KeyRecord",
    "PortalSession",
    "RateLimitMode",
    "RateLimitRule",
    "RateLimitScheme",
    "RateLimitUnit",
    "build",
    "effective_scheme_slug",
]

RateLimitUnit = Literal[
    "millisecond", "second", "minute", "hour", "day", "calendar_day", "month", "calendar_month"
]
RateLimitMode = Literal[
    "per_app",
    "per_key",
    "per_app_and_endpoint",
    "per_key_and_endpoint",
    "per_app_and_ip",
    "per_key_and_ip",
    "per_owner",
    "per_organization",
    "per_workspace",
]
UNITS: tuple[str, ...] = get_args(RateLimitUnit)
MODES: tuple[str, ...] = get_args(RateLimitMode)

# Largest duration per unit, as Wacht enforces them; no window is longer than 30 days.
_MAX_DURATION = {
    "millisecond": 60_000,
    "second": 1_800,
    "minute": 1_440,
    "hour": 720,
    "day": 30,
    "calendar_day": 1,
    "month": 1,
    "calendar_month": 1,
}
_UNIT_MS = {
    "millisecond": 1,
    "second": 1_000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "calendar_day": 86_400_000,
    "month": 30 * 86_400_000,
    "calendar_month": 31 * 86_400_000,
}
_SHORT_RULE = re.compile(r"(\d{1,10})/(\d{0,6})([a-z_]+)(?::([a-z_]+))?(?:@(.+))?", re.ASCII)
_UNIT_ALIASES = {
    "ms": "millisecond",
    "s": "second",
    "sec": "second",
    "m": "minute",
    "min": "minute",
    "h": "hour",
    "d": "day",
}
#: The longest a rotated key's old secret may keep working: 7 days.
MAX_GRACE_SECONDS = 7 * 86_400


class RateLimitRule(_Model):
    """One rate-limit rule: at most ``max_requests`` per ``duration`` x ``unit``.

    Bounds follow Wacht: ``millisecond`` <= 60000, ``second`` <= 1800, ``minute`` <= 1440,
    ``hour`` <= 720, ``day`` <= 30; ``calendar_day``, ``month`` and ``calendar_month`` take
    duration 1. ``endpoints`` are patterns such as ``"*"``, ``"/users/*"`` or
    ``"GET /users/*"``; the rule counts only requests they match. Rules of higher
    ``priority`` are checked first.
    """

    unit: RateLimitUnit
    duration: StrictInt = 1
    max_requests: StrictInt = Field(ge=1, le=1_000_000_000)
    mode: RateLimitMode = "per_key"
    endpoints: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=50)
    priority: StrictInt = Field(default=0, ge=-1_000_000, le=1_000_000)

    @field_validator("duration")
    @classmethod
    def _duration_in_bounds(cls, value: int, info: ValidationInfo) -> int:
        unit = info.data.get("unit")
        if value < 1:
            raise ValueError("must be at least 1")
        if unit is not None and value > _MAX_DURATION[unit]:
            if _MAX_DURATION[unit] == 1:
                raise ValueError(f"must be 1 for unit {unit!r}")
            raise ValueError(f"must be at most {_MAX_DURATION[unit]} for unit {unit!r}")
        return value

    @field_validator("endpoints")
    @classmethod
    def _endpoints_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_endpoint(text)  # raises ValueError with a message for the user
        return list(dict.fromkeys(value))

    @classmethod
    def from_short(cls, text: str) -> RateLimitRule:
        """Parse the short form ``MAX/[DURATION]UNIT[:MODE][@ENDPOINT[,ENDPOINT…]]``.

        ``100/minute`` (per key), ``1000/hour:per_app``, ``10/5second:per_key@GET /x/*``.
        Units may be abbreviated: ``ms``, ``s``/``sec``, ``m``/``min``, ``h``, ``d``.

        Raises:
            ValidationError: the text is not in the short form, or the rule is invalid.
        """
        match = _SHORT_RULE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValidationError.single(
                "rule", f"{text!r} is not of the form 100/minute[:per_key][@GET /path]"
            )
        max_requests, duration, unit, mode, endpoints = match.groups()
        data: dict[str, Any] = {
            "max_requests": int(max_requests),
            "duration": int(duration) if duration else 1,
            "unit": _UNIT_ALIASES.get(unit, unit),
        }
        if mode:
            data["mode"] = mode
        if endpoints:
            data["endpoints"] = [e.strip() for e in endpoints.split(",")]
        return build(cls, data)

    @property
    def short(self) -> str:
        """The rule in the short form :meth:`from_short` reads (priority left out)."""
        duration = "" if self.duration == 1 else str(self.duration)
        text = f"{self.max_requests}/{duration}{self.unit}:{self.mode}"
        if self.endpoints != ["*"]:
            text += "@" + ",".join(self.endpoints)
        return text

    @property
    def window_ms(self) -> int:
        """The window length in milliseconds (calendar units: their longest length)."""
        return self.duration * _UNIT_MS[self.unit]


class RateLimitScheme(_Model):
    """A named, reusable list of rules (``rate_limit_scheme_slug`` on apps and keys)."""

    slug: SchemeSlug
    name: Name
    description: Text | None = None
    rules: list[RateLimitRule] = Field(min_length=1, max_length=MAX_LIST_LENGTH)
    created_at: UtcDatetime
    updated_at: UtcDatetime


class ApiAuthApp(_Model):
    """An API auth app: the container that owns keys (Wacht's ``ApiAuthApp``).

    ``rate_limits`` holds the rules resolved from ``rate_limit_scheme_slug``; it is filled in
    on every read and is not stored. When ``user_id`` is set the app may not carry
    ``permissions`` or ``resources`` (Wacht's rule).
    """

    id: str
    app_slug: AppSlug
    name: Name
    key_prefix: KeyPrefix
    description: Text | None = None
    is_active: bool = True
    # user_id comes before permissions and resources: their validator reads it.
    user_id: ScopeId | None = None
    organization_id: ScopeId | None = None
    workspace_id: ScopeId | None = None
    permissions: Patterns = Field(default_factory=list)
    resources: Patterns = Field(default_factory=list)
    rate_limit_scheme_slug: SchemeSlug | None = None
    rate_limits: list[RateLimitRule] = Field(default_factory=list)
    allowed_ips: IpNetworks = Field(default_factory=list)
    created_at: UtcDatetime
    updated_at: UtcDatetime
    deleted_at: UtcDatetime | None = None

    @field_validator("permissions", "resources")
    @classmethod
    def _user_apps_carry_no_grants(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and info.data.get("user_id") is not None:
            raise ValueError("must be empty when user_id is set (Wacht's rule)")
        return value


class CreditRefill(_Model):
    """How a key's credits come back: each period the balance is *set* to ``amount`` (as
    Unkey does), at UTC midnight (``daily``) or at 00:00 UTC on ``refill_day`` of each month
    (``monthly``; 1-28, so that every month has that day)."""

    interval: Literal["daily", "monthly"]
    amount: Annotated[StrictInt, Field(ge=1, le=MAX_CREDITS)]
    refill_day: Annotated[StrictInt, Field(ge=1, le=28)] | None = None

    @field_validator("refill_day")
    @classmethod
    def _monthly_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("interval") == "daily":
            raise ValueError("is for monthly refills only")
        return value

    @property
    def day(self) -> int:
        """The day of the month a monthly refill happens (1 unless set)."""
        return self.refill_day or 1


class ApiKey(_Model):
    """An API key as every read API returns it: no secret, no hash.

    An empty ``permissions`` list means the key inherits its app's permissions. The key
    displays as ``f"{key_prefix}_…{key_suffix}"``.
    """

    id: str
    app_slug: AppSlug
    name: Name
    key_prefix: KeyPrefix
    key_suffix: str
    permissions: Patterns = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=dict)
    owner: Annotated[str, StringConstraints(max_length=200)] | None = None
    environment: Annotated[str, StringConstraints(max_length=64)] | None = None
    rate_limit_scheme_slug: SchemeSlug | None = None
    rate_limits: list[RateLimitRule] = Field(default_factory=list)
    owner_user_id: ScopeId | None = None
    organization_id: ScopeId | None = None
    workspace_id: ScopeId | None = None
    organization_membership_id: ScopeId | None = None
    workspace_membership_id: ScopeId | None = None
    org_role_permissions: Patterns = Field(default_factory=list)
    workspace_role_permissions: Patterns = Field(default_factory=list)
    expires_at: UtcDatetime | None = None
    last_used_at: UtcDatetime | None = None
    is_active: bool = True
    created_at: UtcDatetime
    updated_at: UtcDatetime
    revoked_at: UtcDatetime | None = None
    revoked_reason: Annotated[str, StringConstraints(max_length=500)] | None = None
    allowed_ips: IpNetworks = Field(default_factory=list)
    credits: Annotated[StrictInt, Field(ge=0, le=MAX_CREDITS)] | None = None
    """Requests the key may still make (``None``: unlimited): the stored balance, of which
    running workers may hold up to a lease each (docs/credits.md)."""
    refill: CreditRefill | None = None

    @property
    def display(self) -> str:
        """The key as it may be shown to people: ``sk_live_…Ab3x``."""
        return f"{self.key_prefix}_…{self.key_suffix}"


class KeyRecord(ApiKey):
    """A key as the store holds it: :class:`ApiKey` plus what must never leave the store.

    ``key_hash`` is the hex SHA-256 of the current secret. After a rotation with a grace
    period, ``previous_key_hash`` / ``previous_key_suffix`` keep the old secret valid until
    ``previous_expires_at``. These fields and ``app_id`` are excluded from ``repr`` and
    ``model_dump``; :meth:`public` drops them.
    """

    app_id: str = Field(exclude=True, repr=False)
    key_hash: str = Field(exclude=True, repr=False, min_length=64, max_length=64)
    previous_key_hash: str | None = Field(default=None, exclude=True, repr=False)
    previous_key_suffix: str | None = Field(default=None, exclude=True, repr=False)
    previous_expires_at: UtcDatetime | None = Field(default=None, exclude=True, repr=False)
    credit_period: StrictInt | None = Field(default=None, exclude=True, repr=False)
    """The start of the refill period the stored balance belongs to."""
    credit_generation: StrictInt | None = Field(default=None, exclude=True, repr=False)
    """Bumped when the balance is set: leases taken before no longer count."""

    def credit_plan(self) -> CreditPlan:
        """The key's credits as verification needs them."""
        refill = self.refill
        return CreditPlan(
            key_id=self.id,
            app_slug=self.app_slug,
            generation=self.credit_generation or 0,
            interval=refill.interval if refill is not None else None,
            amount=refill.amount if refill is not None else 0,
            refill_day=refill.day if refill is not None else 1,
        )

    def dump_all(self) -> dict[str, Any]:
        """Every field, the store-only ones included: for the store and for copies."""
        return self.model_dump() | {name: getattr(self, name) for name in _STORE_ONLY}

    def public(self, rate_limits: list[RateLimitRule] | None = None) -> ApiKey:
        """Return the :class:`ApiKey` view of this record, with the resolved rules."""
        data: dict[str, Any] = self.model_dump()
        if rate_limits is not None:
            data["rate_limits"] = rate_limits
        return ApiKey.model_validate(data)


_STORE_ONLY = (
    "app_id",
    "key_hash",
    "previous_key_hash",
    "previous_key_suffix",
    "previous_expires_at",
    "credit_period",
    "credit_generation",
)


def effective_scheme_slug(key: ApiKey, app: ApiAuthApp | None) -> str | None:
    """The scheme whose rules apply to *key*: its own, else its app's, else none."""
    if key.rate_limit_scheme_slug is not None:
        return key.rate_limit_scheme_slug
    return app.rate_limit_scheme_slug if app is not None else None


class IssuedKey(_Model):
    """What creating or rotating a key returns: the record and the one-time ``secret``.

    The secret is shown here once and stored nowhere; it is kept out of ``repr``.
    """

    key: ApiKey
    secret: str = Field(repr=False)


EventKind = Literal[
    "app.created",
    "app.updated",
    "app.deleted",
    "scheme.created",
    "scheme.updated",
    "scheme.deleted",
    "key.created",
    "key.revoked",
    "key.rotated",
    "key.credits_updated",
]


class Event(_Model):
    """One entry of the event log: the audit trail and the change feed for caches.

    ``scheme_slug`` is keysentry's addition to docs/design.md's ``seq, at, kind, app_slug,
    key_id``: scheme changes touch every key that uses the scheme.
    """

    seq: int
    at: UtcDatetime
    kind: EventKind
    app_slug: str | None = None
    key_id: str | None = None
    scheme_slug: str | None = None


#: How long a portal link may live: from half a minute to a day.
PORTAL_TTL_RANGE = (30, 86_400)
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f\\]")


def _return_url(value: str | None) -> str | None:
    # where the portal's "back" link goes: a path of the host app, or an http(s) URL; never
    # javascript: or a scheme-relative //host (an open redirect off a relative-looking value)
    if value is None:
        return None
    if len(value) > 2_000 or _UNSAFE_URL.search(value):
        raise ValueError("must be a path or http(s) URL without spaces or control characters")
    if value.startswith("/") and not value.startswith("//"):
        return value
    scheme, _, rest = value.partition("://")
    if scheme.lower() in ("http", "https") and rest and not rest.startswith("/"):
        return value
    raise ValueError("must be a path ('/account') or an http(s) URL")


class PortalSession(_Model):
    """A customer's way into the portal (:meth:`KeySentry.create_portal_session`).

    ``url`` is the link to send the customer to: a path (join it to the portal's origin),
    good once, until ``expires_at``. The token in it is not stored, only its hash.
    ``permissions`` limits what the customer's new keys may hold (``None``: the app's own).
    """

    id: str
    app_slug: AppSlug
    owner_user_id: ScopeId
    permissions: Patterns | None = None
    return_url: Annotated[str | None, AfterValidator(_return_url)] = None
    created_at: UtcDatetime
    expires_at: UtcDatetime
    url: str = Field(repr=False)
