"""What every management call shares: the store, the clock, ids, and the checks on ids,
update fields and granted permissions."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, Protocol

from keysentry._fields import MAX_SCOPE_ID
from keysentry.core.keys import TokenFactory, base62
from keysentry.core.patterns import covers
from keysentry.errors import FieldError, NotFoundError, ValidationError
from keysentry.models import (
    MAX_GRACE_SECONDS,
    ApiAuthApp,
    KeyRecord,
    RateLimitRule,
    RateLimitScheme,
)
from keysentry.stores.base import KeyStore, StoreSession, key_rules
from keysentry.stores.usage import UsageRecorder

__all__ = ["MAX_GRACE_SECONDS", "Invalidation", "ManagementBase"]

APP_UPDATABLE = frozenset(
    {
        "allowed_ips",
        "name",
        "key_prefix",
        "description",
        "is_active",
        "permissions",
        "resources",
        "rate_limit_scheme_slug",
        "user_id",
        "organization_id",
        "workspace_id",
    }
)
SCHEME_UPDATABLE = frozenset({"name", "description", "rules"})
LIST_FIELDS = frozenset({"permissions", "resources", "rules", "allowed_ips"})
# a key's permission lists, each capped by its app's grants: a key never grants more
GRANTED_FIELDS = ("permissions", "org_role_permissions", "workspace_role_permissions")


# a whole key (prefix, "_", 38 base62 characters) anywhere in the text
_KEY_SHAPED = re.compile(r"(?<![0-9A-Za-z_])[a-z][a-z0-9_]{1,31}_[0-9A-Za-z]{38}(?![0-9A-Za-z])")
MAX_ID_LENGTH = 200


def require_id(value: object, field: str) -> str:
    """An id or slug given to look something up; checked before any store sees it."""
    if not isinstance(value, str) or not value:
        raise ValidationError.single(field, "must be a non-empty string")
    if _KEY_SHAPED.search(value):
        # a secret pasted where an id goes: refuse it without ever repeating it
        raise ValidationError.single(
            field, "this looks like an API key, not a key id (ids look like 'key_…'); "
            "it was not used and is not shown here",
        )  # fmt: skip
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        # NUL and control characters: no stored id has them (PostgreSQL cannot even hold NUL)
        raise ValidationError.single(
            field, f"is not a valid id: at most {MAX_ID_LENGTH} printable characters"
        )
    return value


def owner_id(value: object) -> str:
    """*value* as the ``owner_user_id`` a stored key holds (an integer becomes a string): any
    id a key can be given can be listed by."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_SCOPE_ID or "\x00" in value:
        raise ValidationError.single(
            "owner_user_id",
            f"must be an id of 1 to {MAX_SCOPE_ID} characters without NUL, or an integer",
        )
    return value


def update_fields(fields: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """Check the names of an update's fields; ``None`` clears a list field to ``[]``."""
    unknown = [
        FieldError(name, "cannot be changed" if name in IMMUTABLE else "is not a known field")
        for name in fields
        if name not in allowed
    ]
    if unknown:
        raise ValidationError(unknown)
    if not fields:
        raise ValidationError.single("", "nothing to update: pass at least one field")
    return {k: ([] if v is None and k in LIST_FIELDS else v) for k, v in fields.items()}


IMMUTABLE = frozenset(
    {"id", "app_slug", "slug", "created_at", "updated_at", "deleted_at", "rate_limits"}
)


def ungranted(granted: Sequence[str], wanted: Iterable[str]) -> list[str]:
    return [w for w in wanted if not any(covers(g, w) for g in granted)]


def networks_outside(inner: Sequence[str], outer: Sequence[str]) -> list[str]:
    """The networks of *inner* that lie in none of *outer* (all of them fit an empty
    *outer*: no list is no limit)."""
    if not outer:
        return []
    wide = [ip_network(n) for n in outer]
    outside = []
    for text in inner:
        network = ip_network(text)
        if isinstance(network, IPv4Network):
            inside = any(isinstance(w, IPv4Network) and network.subnet_of(w) for w in wide)
        else:
            inside = any(isinstance(w, IPv6Network) and network.subnet_of(w) for w in wide)
        if not inside:
            outside.append(text)
    return outside


def scheme_rules(session: StoreSession, slug: str | None, field: str) -> list[RateLimitRule]:
    if slug is None:
        return []
    scheme = session.get_scheme(slug)
    if scheme is None:
        raise ValidationError.single(field, f"no rate-limit scheme {slug!r} exists")
    return list(scheme.rules)


def rules_of_key(session: StoreSession, record: KeyRecord) -> list[RateLimitRule]:
    return key_rules(session, record)[1]


class Invalidation(Protocol):
    """What a management call tells the verification cache after a change."""

    def evict_key(self, key_id: str, *, announce: bool = False) -> None:
        """Forget one key (and, with *announce*, tell the other processes)."""

    def evict_app(self, app_slug: str, *, announce: bool = False) -> None:
        """Forget every key of one app."""

    def clear(self, *, announce: bool = False) -> None:
        """Forget everything (a scheme changed)."""


class ManagementBase(ABC):
    """The state every management call uses; the apps, schemes and keys mix it in. The
    class that composes them (``KeySentry``) supplies :attr:`cache`."""

    store: KeyStore
    usage: UsageRecorder
    _clock: Callable[[], float]
    _token_factory: TokenFactory

    @property
    @abstractmethod
    def cache(self) -> Invalidation:
        """Where a change is evicted from (the verification cache)."""

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _new_id(self, kind: str, now: datetime) -> str:
        # time-ordered: 8 base62 digits of milliseconds, then 12 random ones
        millis = int(now.timestamp() * 1000)
        return f"{kind}_{base62(millis, 8)}{self._token_factory(12)}"

    @staticmethod
    def _live_app(session: StoreSession, app_slug: str) -> ApiAuthApp:
        app = session.get_app(require_id(app_slug, "app_slug"))
        if app is None:
            raise NotFoundError("app", app_slug)
        return app

    @staticmethod
    def _scheme(session: StoreSession, slug: str) -> RateLimitScheme:
        scheme = session.get_scheme(require_id(slug, "slug"))
        if scheme is None:
            raise NotFoundError("scheme", slug)
        return scheme

    @staticmethod
    def _key(session: StoreSession, key_id: str) -> KeyRecord:
        record = session.get_key(require_id(key_id, "key_id"))
        if record is None:
            raise NotFoundError("key", key_id)
        return record


def check_new_key(app: ApiAuthApp, record: KeyRecord, now: datetime) -> None:
    """A new key expires in the future and holds only permissions its app grants.

    Raises:
        ValidationError: naming each field at fault.
    """
    if record.expires_at is not None and record.expires_at <= now:
        raise ValidationError.single("expires_at", "is not in the future")
    grants = f"grants only {app.permissions}" if app.permissions else "grants none"
    denied = [
        FieldError(field, f"{p!r} is not granted by app {app.app_slug!r}, which {grants}")
        for field in GRANTED_FIELDS
        for p in ungranted(app.permissions, getattr(record, field))
    ]
    denied += [
        FieldError("allowed_ips", f"{n!r} is not within app {app.app_slug!r}'s allowed_ips "
                   f"{app.allowed_ips}")
        for n in networks_outside(record.allowed_ips, app.allowed_ips)
    ]  # fmt: skip
    if denied:
        raise ValidationError(denied)
