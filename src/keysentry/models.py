"""The records keysentry manages: apps, keys, rate-limit schemes and rules, events.

Field names follow Wacht's API (``reference/000`` and ``001``). Models are pydantic v2,
frozen, and reject unknown fields. ``key_hash`` lives only on :class:`KeyRecord`, the store's
internal form, and is excluded from its ``repr`` and ``model_dump``; every public read returns
an :class:`ApiKey`, which has no such field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from keysentry._fields import (
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
from keysentry._rules import (
    MODES,
    UNITS,
    RateLimitMode,
    RateLimitRule,
    RateLimitScheme,
    RateLimitUnit,
)
from keysentry.core.credits import MAX_CREDITS, CreditPlan

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

#: The longest a rotated key's old secret may keep working: 7 days.
MAX_GRACE_SECONDS = 7 * 86_400


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
