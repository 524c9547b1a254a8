"""Keys: issued under an app, listed, revoked and rotated. The secret exists only in what
:meth:`create_api_key` and :meth:`rotate_api_key` return."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from keysentry.core.credits import MAX_CREDITS, is_amount, period_start
from keysentry.core.keys import ParsedKey, generate_key
from keysentry.errors import ConflictError, ValidationError
from keysentry.management._common import (
    MAX_GRACE_SECONDS,
    ManagementBase,
    check_new_key,
    owner_id,
    rules_of_key,
    scheme_rules,
)
from keysentry.models import (
    ApiAuthApp,
    ApiKey,
    CreditRefill,
    IssuedKey,
    KeyRecord,
    build,
    effective_scheme_slug,
)

__all__ = ["KeyManagement"]


class KeyManagement(ManagementBase):
    """Issue, list, read, revoke and rotate keys."""

    def create_api_key(
        self,
        app_slug: str,
        name: str,
        *,
        permissions: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        expires_at: datetime | str | None = None,
        owner: str | None = None,
        environment: str | None = None,
        rate_limit_scheme_slug: str | None = None,
        owner_user_id: str | int | None = None,
        organization_id: str | int | None = None,
        workspace_id: str | int | None = None,
        organization_membership_id: str | int | None = None,
        workspace_membership_id: str | int | None = None,
        org_role_permissions: Sequence[str] | None = None,
        workspace_role_permissions: Sequence[str] | None = None,
        allowed_ips: Sequence[str] | None = None,
        credits: int | None = None,
        refill: CreditRefill | Mapping[str, Any] | None = None,
    ) -> IssuedKey:
        """Issue a key under an app and return it with its secret, shown this once.

        Each of ``permissions`` must be granted by the app's permission patterns; a key
        without permissions inherits the app's. ``expires_at`` must be timezone-aware and in
        the future. ``owner_user_id``, ``organization_id`` and ``workspace_id`` default to
        the app's. ``allowed_ips`` must lie within the app's (when it has any); the key is
        then usable only from those addresses (without a list of its own: from the app's).
        ``credits`` is how many requests the key may make (``None``: unlimited); a
        ``refill`` sets the balance to its amount each day or month (credits default to it).

        Raises:
            NotFoundError: no live app has this slug.
            ValidationError: a malformed field, a permission the app does not grant, or an
                unknown scheme.
        """
        now = self._now()
        with self.store.write() as session:
            app = self._live_app(session, app_slug)
            parsed = generate_key(app.key_prefix, token_factory=self._token_factory)
            fields = {
                "name": name, "permissions": permissions, "metadata": metadata,
                "owner": owner, "environment": environment,
                "rate_limit_scheme_slug": rate_limit_scheme_slug, "owner_user_id": owner_user_id,
                "organization_id": organization_id, "workspace_id": workspace_id,
                "organization_membership_id": organization_membership_id,
                "workspace_membership_id": workspace_membership_id,
                "org_role_permissions": org_role_permissions,
                "workspace_role_permissions": workspace_role_permissions,
                "expires_at": expires_at, "allowed_ips": allowed_ips,
                "credits": credits, "refill": refill,
            }  # fmt: skip
            record = self._new_record(app, parsed, fields, now)
            check_new_key(app, record, now)
            if record.rate_limit_scheme_slug is not None:
                scheme_rules(session, record.rate_limit_scheme_slug, "rate_limit_scheme_slug")
            session.add_key(record)
            session.append_event("key.created", now, app_slug=app.app_slug, key_id=record.id)
            rules = rules_of_key(session, record)
        return IssuedKey(key=record.public(rules), secret=parsed.secret)

    def _new_record(
        self, app: ApiAuthApp, parsed: ParsedKey, fields: dict[str, Any], now: datetime
    ) -> KeyRecord:
        """A new key's record from *fields* (the ids default to the app's)."""
        f = fields
        data = {
            "id": self._new_id("key", now),
            "app_id": app.id,
            "app_slug": app.app_slug,
            "key_prefix": parsed.prefix,
            "key_suffix": parsed.suffix,
            "key_hash": parsed.digest,
            **f,
            "permissions": f["permissions"] or [],
            "metadata": {} if f["metadata"] is None else f["metadata"],
            "owner_user_id": _or(f["owner_user_id"], app.user_id),
            "organization_id": _or(f["organization_id"], app.organization_id),
            "workspace_id": _or(f["workspace_id"], app.workspace_id),
            "org_role_permissions": f["org_role_permissions"] or [],
            "workspace_role_permissions": f["workspace_role_permissions"] or [],
            "allowed_ips": _as_list(f["allowed_ips"]),
            "credit_generation": 0,
            "created_at": now,
            "updated_at": now,
        }
        record = build(KeyRecord, data)
        if record.refill is not None:  # the balance belongs to this period; refills follow
            if record.credits is None:
                record = record.model_copy(update={"credits": record.refill.amount})
            period = period_start(record.credit_plan(), now.timestamp())
            record = record.model_copy(update={"credit_period": period})
        elif record.credits is not None:
            record = record.model_copy(update={"credit_period": 0})
        return record

    def update_credits(
        self,
        key_id: str,
        *,
        set: int | None = None,
        increment: int | None = None,
        decrement: int | None = None,
    ) -> ApiKey:
        """Change a key's credits: exactly one of *set* (the balance is now this; leases
        held by running workers stop counting), *increment* or *decrement* (taken from the
        stored balance; if it holds less, it goes to 0 and the workers' leases stop
        counting too). Logged as ``key.credits_updated``; running workers reload the key
        like after a revocation.

        Raises:
            NotFoundError: no key has this id.
            ValidationError: not exactly one change, a negative or non-integer amount, or
                *increment* / *decrement* on a key without credits.
        """
        given = {n: v for n, v in (("set", set), ("increment", increment),
                                   ("decrement", decrement)) if v is not None}  # fmt: skip
        if len(given) != 1:
            raise ValidationError.single("set", "give exactly one of set, increment, decrement")
        ((field, amount),) = given.items()
        if not is_amount(amount):
            raise ValidationError.single(field, f"must be an integer from 0 to {MAX_CREDITS}")
        now = self._now()
        with self.store.write() as session:
            record = self._key(session, key_id)
            generation = record.credit_generation or 0
            period = record.credit_period or 0
            if field == "set":
                balance, generation = amount, generation + 1
                if record.refill is not None:
                    period = period_start(record.credit_plan(), now.timestamp())
            elif record.credits is None:
                raise ValidationError.single(field, "the key has no credit limit: use set")
            elif field == "increment":
                balance = min(record.credits + amount, MAX_CREDITS)
            else:
                balance = max(record.credits - amount, 0)
                if record.credits < amount:
                    generation += 1  # the leases held elsewhere go too
            session.set_credits(record.id, balance, period, generation)
            session.append_event("key.credits_updated", now, app_slug=record.app_slug,
                                 key_id=record.id)  # fmt: skip
            record = record.model_copy(update={"credits": balance, "credit_period": period,
                                               "credit_generation": generation})  # fmt: skip
            rules = rules_of_key(session, record)
        self.cache.evict_key(record.id, announce=True)
        return record.public(rules)

    def list_api_keys(
        self,
        app_slug: str,
        *,
        owner_user_id: str | int | None = None,
        unused_for: timedelta | None = None,
    ) -> list[ApiKey]:
        """Return every key of a live app, revoked ones included, oldest first. No secrets.

        With *owner_user_id*, only that owner's keys (found by the store's index, not by
        reading the app's every key). With *unused_for*, only the stale keys: those not
        used for at least that long, and those never used (``last_used_at`` is ``None``),
        whatever their age. This process's pending uses are written first; other
        processes' arrive within their ``usage_interval``.

        Raises:
            NotFoundError: no live app has this slug.
            ValidationError: *owner_user_id* is not an id, or *unused_for* is not a positive
                timedelta.
        """
        owner = None if owner_user_id is None else owner_id(owner_user_id)
        if unused_for is not None:
            if not isinstance(unused_for, timedelta) or unused_for <= timedelta(0):
                raise ValidationError.single("unused_for", "must be a positive timedelta")
            self.usage.flush()
        with self.store.read() as session:
            app = self._live_app(session, app_slug)
            schemes = {s.slug: list(s.rules) for s in session.list_schemes()}
            records = session.list_keys(app.id, owner)
        if unused_for is not None:
            cutoff = self._now() - unused_for
            records = [r for r in records if r.last_used_at is None or r.last_used_at <= cutoff]
        return [r.public(schemes.get(effective_scheme_slug(r, app) or "", [])) for r in records]

    def get_api_key(self, key_id: str) -> ApiKey:
        """Return one key by id. No secret, no hash.

        Raises:
            NotFoundError: no key has this id.
        """
        with self.store.read() as session:
            record = self._key(session, key_id)
            return record.public(rules_of_key(session, record))

    def revoke_api_key(self, key_id: str, reason: str | None = None) -> ApiKey:
        """Revoke a key for good: from the next request on it is answered 403.

        Revoking a revoked key changes nothing and returns it as it is.

        Raises:
            NotFoundError: no key has this id.
            ValidationError: *reason* is longer than 500 characters.
        """
        now = self._now()
        with self.store.write() as session:
            record = self._key(session, key_id)
            if record.revoked_at is None:
                record = self._replace_key(
                    record,
                    revoked_at=now,
                    revoked_reason=reason,
                    updated_at=now,
                    previous_key_hash=None,
                    previous_key_suffix=None,
                    previous_expires_at=None,
                )
                session.save_key(record)
                session.append_event("key.revoked", now, app_slug=record.app_slug, key_id=record.id)
            rules = rules_of_key(session, record)
        self.cache.evict_key(record.id, announce=True)
        return record.public(rules)

    def rotate_api_key(self, key_id: str, *, grace_seconds: int = 0) -> IssuedKey:
        """Give a key a new secret; the key keeps its id, name, permissions and prefix.

        The old secret stops matching at once, or after *grace_seconds* (at most 7 days) so
        that clients can be redeployed. Only the latest previous secret is kept: rotating
        again ends an earlier grace period.

        Raises:
            NotFoundError: no key has this id.
            ConflictError: the key is revoked, or its app was deleted.
            ValidationError: *grace_seconds* is not an integer in 0..604800.
        """
        if (
            not isinstance(grace_seconds, int)
            or isinstance(grace_seconds, bool)
            or not 0 <= grace_seconds <= MAX_GRACE_SECONDS
        ):
            raise ValidationError.single(
                "grace_seconds", f"must be an integer from 0 to {MAX_GRACE_SECONDS}"
            )
        now = self._now()
        with self.store.write() as session:
            record = self._key(session, key_id)
            if record.revoked_at is not None:
                raise ConflictError(f"key {key_id!r} is revoked and cannot be rotated")
            app = session.get_app_by_id(record.app_id)
            if app is None or app.deleted_at is not None:
                raise ConflictError(f"the app of key {key_id!r} was deleted")
            parsed = generate_key(record.key_prefix, token_factory=self._token_factory)
            grace = grace_seconds > 0
            record = self._replace_key(
                record,
                key_hash=parsed.digest,
                key_suffix=parsed.suffix,
                previous_key_hash=record.key_hash if grace else None,
                previous_key_suffix=record.key_suffix if grace else None,
                previous_expires_at=now + timedelta(seconds=grace_seconds) if grace else None,
                updated_at=now,
            )
            session.save_key(record)
            session.append_event("key.rotated", now, app_slug=record.app_slug, key_id=record.id)
            rules = rules_of_key(session, record)
        self.cache.evict_key(record.id, announce=True)
        return IssuedKey(key=record.public(rules), secret=parsed.secret)

    @staticmethod
    def _replace_key(record: KeyRecord, **changes: Any) -> KeyRecord:
        return build(KeyRecord, record.dump_all() | changes)


def _or(value: Any, default: Any) -> Any:
    return value if value is not None else default


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
