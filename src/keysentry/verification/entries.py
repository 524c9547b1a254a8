"""Stored records compiled into a :class:`~keysentry.core.decision.KeyEntry`: the key's
effective permissions (capped by its app), its identity and its compiled rate-limit rules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from ipaddress import ip_network
from types import MappingProxyType

from keysentry.core.decision import Identity, KeyEntry
from keysentry.core.patterns import covers
from keysentry.core.ratelimit import Algorithm, compile_limits
from keysentry.models import ApiAuthApp, KeyRecord, RateLimitRule
from keysentry.stores.base import StoreSession, key_rules

__all__ = ["EntryBuilder", "capped", "compile_entry"]


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def capped(granted: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """*wanted* within what the app grants: a pattern the app covers stays; a broader one
    (``*`` under an app granting ``users:read``) becomes the app's patterns it covers.
    Create and update refuse both cases; this holds for records written before that rule
    or behind the service's back."""
    kept: list[str] = []
    for pattern in wanted:
        if any(covers(g, pattern) for g in granted):
            kept.append(pattern)
        else:
            kept.extend(g for g in granted if covers(pattern, g))
    return kept


def compile_entry(
    record: KeyRecord,
    app: ApiAuthApp,
    rules: list[RateLimitRule],
    algorithm: Algorithm = "sliding_window",
) -> KeyEntry:
    """Turn a stored key, its app and its rules into what verification needs."""
    own = record.permissions or app.permissions
    allowed = record.allowed_ips or app.allowed_ips  # a key's list lies within its app's
    roles = [*record.org_role_permissions, *record.workspace_role_permissions]
    granted = app.permissions
    permissions = tuple(dict.fromkeys([*capped(granted, own), *capped(granted, roles)]))
    identity = Identity(
        key_id=record.id,
        key_name=record.name,
        app_slug=record.app_slug,
        permissions=permissions,
        resources=tuple(app.resources),
        metadata=MappingProxyType(dict(record.metadata)),
        owner_user_id=record.owner_user_id,
        organization_id=record.organization_id,
        workspace_id=record.workspace_id,
        expires_at=_ts(record.expires_at),
    )
    return KeyEntry(
        digest=record.key_hash,
        identity=identity,
        revoked=record.revoked_at is not None,
        active=record.is_active,
        app_active=app.is_active and app.deleted_at is None,
        expires_at=_ts(record.expires_at),
        previous_digest=record.previous_key_hash,
        previous_until=_ts(record.previous_expires_at),
        limits=compile_limits(rules, algorithm),
        networks=tuple(ip_network(n) for n in allowed) if allowed else None,
        credits=record.credit_plan() if record.credits is not None else None,
    )


class EntryBuilder:
    """Reads what a key's entry needs (its app and rules) in a store session and compiles it;
    what :class:`~keysentry.stores.cached.CachedKeyStore` calls after a hash matched."""

    def __init__(self, algorithm: Algorithm = "sliding_window") -> None:
        self.algorithm: Algorithm = algorithm

    def __call__(self, session: StoreSession, record: KeyRecord) -> KeyEntry | None:
        """The entry for *record*, or ``None`` when its app no longer exists."""
        app, rules = key_rules(session, record)
        return None if app is None else compile_entry(record, app, rules, self.algorithm)
