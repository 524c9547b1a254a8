"""``KeySentry``: the management API over a key store.

Every rule about apps, schemes and keys lives here, once: the store only loads and saves.
Each call validates its input, then reads, checks and writes inside one serialized write
session, so a call that raises has written nothing.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from keysentry.core.decision import Decision, Reason
from keysentry.core.keys import TokenFactory, base62, generate_key, random_token
from keysentry.core.patterns import covers
from keysentry.core.pipeline import (
    UNAVAILABLE,
    Hit,
    LookupKey,
    LookupResult,
    Policy,
    RequestFacts,
    after_hit,
    after_lookup,
    begin,
    normal_method,
)
from keysentry.core.ratelimit import Algorithm
from keysentry.errors import (
    ConfigurationError,
    ConflictError,
    FieldError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from keysentry.limiters import Limiter, MemoryLimiter
from keysentry.limiters.base import OnError, check_on_error
from keysentry.models import (
    ApiAuthApp,
    ApiKey,
    Event,
    IssuedKey,
    KeyRecord,
    RateLimitRule,
    RateLimitScheme,
    build,
    effective_scheme_slug,
)
from keysentry.settings import DEFAULT_DATABASE_URL, check_limiter_url
from keysentry.stores import KeyStore, StoreSession, store_from_url
from keysentry.stores.cached import MISS, CachedKeyStore, StillDown, key_rules
from keysentry.stores.notify import RedisChanges, channel_name
from keysentry.stores.usage import UsageRecorder, install_stop_handler

__all__ = ["KeySentry"]

_to_thread: Any = None


async def _run_in_thread(function: Callable[[LookupKey], LookupResult], lookup: LookupKey) -> Any:
    global _to_thread  # resolved once: an import statement costs on every call
    if _to_thread is None:
        from anyio import to_thread  # starlette's dependency; sync callers never need it

        _to_thread = to_thread.run_sync
    return await _to_thread(function, lookup)


_APP_UPDATABLE = frozenset(
    {
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
_SCHEME_UPDATABLE = frozenset({"name", "description", "rules"})
_LIST_FIELDS = frozenset({"permissions", "resources", "rules"})
# a key's permission lists, each capped by its app's grants: a key never grants more
_GRANTED_FIELDS = ("permissions", "org_role_permissions", "workspace_role_permissions")
MAX_GRACE_SECONDS = 7 * 86_400
_USED = frozenset({Reason.OK, Reason.PERMISSION_DENIED, Reason.RESOURCE_DENIED})
logger = logging.getLogger("keysentry")
F = TypeVar("F", bound=Callable[..., Any])


# a whole key (prefix, "_", 38 base62 characters) anywhere in the text
_KEY_SHAPED = re.compile(r"(?<![0-9A-Za-z_])[a-z][a-z0-9_]{1,31}_[0-9A-Za-z]{38}(?![0-9A-Za-z])")
MAX_ID_LENGTH = 200
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _require_str(value: object, field: str) -> str:
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


def _changes(fields: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """Check the names of an update's fields; ``None`` clears a list field to ``[]``."""
    unknown = [
        FieldError(name, "cannot be changed" if name in _IMMUTABLE else "is not a known field")
        for name in fields
        if name not in allowed
    ]
    if unknown:
        raise ValidationError(unknown)
    if not fields:
        raise ValidationError.single("", "nothing to update: pass at least one field")
    return {k: ([] if v is None and k in _LIST_FIELDS else v) for k, v in fields.items()}


_IMMUTABLE = frozenset(
    {"id", "app_slug", "slug", "created_at", "updated_at", "deleted_at", "rate_limits"}
)


def _ungranted(granted: Sequence[str], wanted: Iterable[str]) -> list[str]:
    return [w for w in wanted if not any(covers(g, w) for g in granted)]


def _rules(session: StoreSession, slug: str | None, field: str) -> list[RateLimitRule]:
    if slug is None:
        return []
    scheme = session.get_scheme(slug)
    if scheme is None:
        raise ValidationError.single(field, f"no rate-limit scheme {slug!r} exists")
    return list(scheme.rules)


def _key_rules(session: StoreSession, record: KeyRecord) -> list[RateLimitRule]:
    return key_rules(session, record)[1]


class KeySentry:
    """Issue, manage and (with the adapters) verify API keys.

    Args:
        database_url: where keys live: ``sqlite:///./keysentry.db`` (the default),
            ``postgresql://…`` or ``memory://``. The schema is created on first use.
        limiter_url: where rate-limit counters live: ``None`` or ``memory://`` for this
            process (exact within it), ``redis://host:6379/0`` to share them with every
            worker and machine that uses the same Redis (exact across all of them; needs
            ``keysentry[redis]``). With Redis, cache invalidations also travel over its
            pub/sub: a key revoked in one process is refused by the others within
            milliseconds (the event log remains the fallback, every *sync_interval*).
        on_limiter_error: when Redis cannot be reached: ``"open"`` (default: admit, logged),
            ``"closed"`` (503 with ``Retry-After``) or ``"local"`` (count in this process).
            Authentication never depends on the limiter.
        limiter_timeout: seconds to wait for Redis (connect and each reply).
        rate_limit_algorithm: ``"sliding_window"`` (default) or ``"fixed_window"``.
        store: a ready :class:`~keysentry.stores.KeyStore`, instead of *database_url*.
        limiter: a ready :class:`~keysentry.limiters.Limiter`, instead of *limiter_url*.
        clock: returns the current time as a Unix timestamp; tests inject a fake clock.
        token_factory: returns *n* random base62 characters; tests inject a fixed one.
        cache_size: how many verified keys to keep in memory.
        cache_ttl: seconds a cached key is trusted before it is read again.
        sync_interval: seconds between reads of the event log, which is how changes made by
            other processes (workers, the CLI) reach this one: a key revoked elsewhere is
            refused here at most this long after. Changes made through this object take
            effect on the next request. ``None`` turns the log off (then *cache_ttl* bounds).
        max_stale: while the store is unreachable, a key verified before keeps verifying for
            at most this many seconds after it was last confirmed; unknown keys get 503.
        usage_interval: seconds between batched writes of the keys' ``last_used_at`` (a
            background thread; also written at :meth:`close`, at exit and on SIGTERM).
            ``None``: only then and at ``usage.flush()``.
        redis_namespace: what this deployment's names on Redis start with: the counters
            (``keysentry:rl:…``) and the invalidation channel (``keysentry:changes:0``, the
            database number added). Two deployments that share a Redis need different
            namespaces or database numbers.

    Raises:
        ConfigurationError: an unsupported URL, or both *database_url* and *store*.

    Use it as a context manager, or call :meth:`close`, to release database connections.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        limiter_url: str | None = None,
        on_limiter_error: OnError = "open",
        limiter_timeout: float = 0.1,
        store: KeyStore | None = None,
        limiter: Limiter | None = None,
        clock: Callable[[], float] = time.time,
        token_factory: TokenFactory = random_token,
        cache_size: int = 10_000,
        cache_ttl: float = 30.0,
        sync_interval: float | None = 1.0,
        max_stale: float = 60.0,
        rate_limit_algorithm: Algorithm = "sliding_window",
        usage_interval: float | None = 10.0,
        redis_namespace: str = "keysentry",
    ) -> None:
        if store is not None and database_url is not None:
            raise ConfigurationError("pass database_url or store, not both")
        if rate_limit_algorithm not in ("sliding_window", "fixed_window"):
            raise ConfigurationError(
                "rate_limit_algorithm must be 'sliding_window' or 'fixed_window'"
            )
        if not isinstance(max_stale, int | float) or isinstance(max_stale, bool) or max_stale < 0:
            raise ConfigurationError("max_stale must be a number of seconds >= 0")
        if usage_interval is not None and (
            not isinstance(usage_interval, int | float)
            or isinstance(usage_interval, bool)
            or usage_interval <= 0
        ):
            raise ConfigurationError("usage_interval must be a number of seconds > 0, or None")
        if limiter is not None and limiter_url is not None:
            raise ConfigurationError("pass limiter_url or limiter, not both")
        if not isinstance(redis_namespace, str) or not _NAMESPACE.fullmatch(redis_namespace):
            raise ConfigurationError(
                "redis_namespace must be 1-64 of a-z, A-Z, 0-9, '_', '-' and '.'"
            )
        self.limiter_url = check_limiter_url(limiter_url)
        check_on_error(on_limiter_error)
        self.limiter: Limiter
        if limiter is not None:
            self.limiter = limiter
        elif self.limiter_url is None or self.limiter_url.startswith("memory:"):
            self.limiter = MemoryLimiter()
        else:
            from keysentry.limiters.redis import RedisLimiter

            self.limiter = RedisLimiter(
                self.limiter_url, timeout=limiter_timeout, on_error=on_limiter_error,
                key_prefix=f"{redis_namespace}:rl:",
            )  # fmt: skip
        self.store: KeyStore = store or store_from_url(database_url or DEFAULT_DATABASE_URL)
        changes = None
        if self.limiter_url is not None and not self.limiter_url.startswith("memory:"):
            changes = RedisChanges(
                self.limiter_url,
                channel=channel_name(self.limiter_url, redis_namespace),
                timeout=max(limiter_timeout, 1.0),
            )
        self._clock = clock
        self._token_factory = token_factory
        self.cache = CachedKeyStore(
            self.store,
            maxsize=cache_size,
            ttl=cache_ttl,
            sync_interval=sync_interval,
            algorithm=rate_limit_algorithm,
            max_stale=max_stale,
            changes=changes,
        )
        self.usage = UsageRecorder(self.store, interval=usage_interval)
        """``last_used_at`` write-behind; :meth:`UsageRecorder.flush` writes it now."""
        install_stop_handler()  # werkzeug's server and waitress would lose it on SIGTERM

    def __enter__(self) -> KeySentry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Write the pending ``last_used_at`` times, then release the store's connections,
        the limiter and the invalidation channel."""
        self.usage.close()
        if self.cache.changes is not None:
            self.cache.changes.close()
        self.store.close()
        self.limiter.close()

    async def aclose(self) -> None:
        """:meth:`close`, from an event loop: also closes the Redis limiter's asyncio
        connections of this loop cleanly (call it at application shutdown)."""
        await self.limiter.aclose()
        self.close()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _new_id(self, kind: str, now: datetime) -> str:
        # time-ordered: 8 base62 digits of milliseconds, then 12 random ones
        millis = int(now.timestamp() * 1000)
        return f"{kind}_{base62(millis, 8)}{self._token_factory(12)}"

    # ---------------------------------------------------------------- apps
    def create_api_auth_app(
        self,
        app_slug: str,
        name: str,
        key_prefix: str,
        *,
        description: str | None = None,
        is_active: bool = True,
        permissions: Sequence[str] | None = None,
        resources: Sequence[str] | None = None,
        rate_limit_scheme_slug: str | None = None,
        user_id: str | int | None = None,
        organization_id: str | int | None = None,
        workspace_id: str | int | None = None,
    ) -> ApiAuthApp:
        """Create an API auth app: the container that owns keys.

        ``permissions`` and ``resources`` are glob patterns (``users:*``, ``users/*``) that
        cap what the app's keys may be granted. When ``user_id`` is set they must be empty
        (Wacht's rule).

        Raises:
            ValidationError: a field is malformed, or the scheme does not exist.
            ConflictError: a live app already has this ``app_slug``.
        """
        now = self._now()
        app = build(
            ApiAuthApp,
            {
                "id": self._new_id("app", now),
                "app_slug": app_slug,
                "name": name,
                "key_prefix": key_prefix,
                "description": description,
                "is_active": is_active,
                "permissions": permissions or [],
                "resources": resources or [],
                "rate_limit_scheme_slug": rate_limit_scheme_slug,
                "user_id": user_id,
                "organization_id": organization_id,
                "workspace_id": workspace_id,
                "created_at": now,
                "updated_at": now,
            },
        )
        with self.store.write() as session:
            if session.get_app(app.app_slug) is not None:
                raise ConflictError(f"an app {app.app_slug!r} already exists", field="app_slug")
            rules = _rules(session, app.rate_limit_scheme_slug, "rate_limit_scheme_slug")
            session.add_app(app)
            session.append_event("app.created", now, app_slug=app.app_slug)
        return app.model_copy(update={"rate_limits": rules})

    def list_api_auth_apps(self) -> list[ApiAuthApp]:
        """Return the live apps, oldest first, each with its resolved ``rate_limits``."""
        with self.store.read() as session:
            schemes = {s.slug: list(s.rules) for s in session.list_schemes()}
            apps = session.list_apps()
        return [
            a.model_copy(update={"rate_limits": schemes.get(a.rate_limit_scheme_slug or "", [])})
            for a in apps
        ]

    def get_api_auth_app(self, app_slug: str) -> ApiAuthApp:
        """Return the live app with this slug.

        Raises:
            NotFoundError: no live app has this slug.
        """
        with self.store.read() as session:
            app = self._live_app(session, app_slug)
            rules = _rules(session, app.rate_limit_scheme_slug, "rate_limit_scheme_slug")
        return app.model_copy(update={"rate_limits": rules})

    def update_api_auth_app(self, app_slug: str, /, **fields: Any) -> ApiAuthApp:
        """Change some of an app's fields; the others keep their values.

        ``app_slug`` cannot change. Narrowing ``permissions`` is refused while a live key
        holds a permission the new list would no longer grant.

        Raises:
            NotFoundError: no live app has this slug.
            ValidationError: an unknown, immutable or malformed field.
        """
        changes = _changes(fields, _APP_UPDATABLE)
        now = self._now()
        with self.store.write() as session:
            current = self._live_app(session, app_slug)
            data = current.model_dump(exclude={"rate_limits"}) | changes | {"updated_at": now}
            app = build(ApiAuthApp, data)
            rules = _rules(session, app.rate_limit_scheme_slug, "rate_limit_scheme_slug")
            if "permissions" in changes:
                self._check_keys_still_granted(session, app)
            session.save_app(app)
            session.append_event("app.updated", now, app_slug=app.app_slug)
        self.cache.evict_app(app.app_slug, announce=True)
        return app.model_copy(update={"rate_limits": rules})

    def delete_api_auth_app(self, app_slug: str) -> ApiAuthApp:
        """Soft-delete an app. Its keys stop verifying at once; its slug may be reused by a
        new app, whose keys are unrelated.

        Raises:
            NotFoundError: no live app has this slug.
        """
        now = self._now()
        with self.store.write() as session:
            app = self._live_app(session, app_slug)
            app = app.model_copy(update={"deleted_at": now, "updated_at": now})
            session.save_app(app)
            session.append_event("app.deleted", now, app_slug=app.app_slug)
        self.cache.evict_app(app.app_slug, announce=True)
        return app

    @staticmethod
    def _live_app(session: StoreSession, app_slug: str) -> ApiAuthApp:
        app = session.get_app(_require_str(app_slug, "app_slug"))
        if app is None:
            raise NotFoundError("app", app_slug)
        return app

    @staticmethod
    def _check_keys_still_granted(session: StoreSession, app: ApiAuthApp) -> None:
        orphaned = [
            FieldError("permissions", f"would no longer grant {p!r}, held by key {k.id!r}")
            for k in session.list_keys(app.id)
            if k.revoked_at is None
            for field in _GRANTED_FIELDS
            for p in _ungranted(app.permissions, getattr(k, field))
        ]
        if orphaned:
            raise ValidationError(orphaned)

    # ------------------------------------------------------------- schemes
    def create_rate_limit_scheme(
        self,
        slug: str,
        name: str,
        rules: Sequence[RateLimitRule | Mapping[str, Any]],
        *,
        description: str | None = None,
    ) -> RateLimitScheme:
        """Create a named list of rate-limit rules that apps and keys can refer to.

        Raises:
            ValidationError: a malformed field or rule (named like ``rules.0.duration``).
            ConflictError: a scheme with this slug exists.
        """
        now = self._now()
        scheme = build(
            RateLimitScheme,
            {
                "slug": slug,
                "name": name,
                "description": description,
                "rules": rules,
                "created_at": now,
                "updated_at": now,
            },
        )
        with self.store.write() as session:
            if session.get_scheme(scheme.slug) is not None:
                raise ConflictError(f"a scheme {scheme.slug!r} already exists", field="slug")
            session.add_scheme(scheme)
            session.append_event("scheme.created", now, scheme_slug=scheme.slug)
        return scheme

    def list_rate_limit_schemes(self) -> list[RateLimitScheme]:
        """Return every scheme, oldest first."""
        with self.store.read() as session:
            return session.list_schemes()

    def get_rate_limit_scheme(self, slug: str) -> RateLimitScheme:
        """Return the scheme with this slug.

        Raises:
            NotFoundError: there is none.
        """
        with self.store.read() as session:
            return self._scheme(session, slug)

    def update_rate_limit_scheme(self, slug: str, /, **fields: Any) -> RateLimitScheme:
        """Change a scheme's ``name``, ``description`` or ``rules``; takes effect for every
        app and key that uses it.

        Raises:
            NotFoundError: no such scheme.
            ValidationError: an unknown or malformed field.
        """
        changes = _changes(fields, _SCHEME_UPDATABLE)
        now = self._now()
        with self.store.write() as session:
            current = self._scheme(session, slug)
            scheme = build(RateLimitScheme, current.model_dump() | changes | {"updated_at": now})
            session.save_scheme(scheme)
            session.append_event("scheme.updated", now, scheme_slug=scheme.slug)
        self.cache.clear(announce=True)
        return scheme

    def delete_rate_limit_scheme(self, slug: str) -> RateLimitScheme:
        """Delete a scheme that no live app and no unrevoked key uses.

        Raises:
            NotFoundError: no such scheme.
            ConflictError: the scheme is still in use; the message names the users.
        """
        now = self._now()
        with self.store.write() as session:
            scheme = self._scheme(session, slug)
            users = session.scheme_users(scheme.slug)
            if users:
                raise ConflictError(
                    f"scheme {slug!r} is still used by {', '.join(users)}", field="slug"
                )
            session.remove_scheme(scheme.slug)
            session.append_event("scheme.deleted", now, scheme_slug=scheme.slug)
        self.cache.clear(announce=True)
        return scheme

    @staticmethod
    def _scheme(session: StoreSession, slug: str) -> RateLimitScheme:
        scheme = session.get_scheme(_require_str(slug, "slug"))
        if scheme is None:
            raise NotFoundError("scheme", slug)
        return scheme

    # ---------------------------------------------------------------- keys
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
    ) -> IssuedKey:
        """Issue a key under an app and return it with its secret, shown this once.

        Each of ``permissions`` must be granted by the app's permission patterns; a key
        without permissions inherits the app's. ``expires_at`` must be timezone-aware and in
        the future. ``owner_user_id``, ``organization_id`` and ``workspace_id`` default to
        the app's.

        Raises:
            NotFoundError: no live app has this slug.
            ValidationError: a malformed field, a permission the app does not grant, or an
                unknown scheme.
        """
        now = self._now()
        with self.store.write() as session:
            app = self._live_app(session, app_slug)
            parsed = generate_key(app.key_prefix, token_factory=self._token_factory)
            record = build(
                KeyRecord,
                {
                    "id": self._new_id("key", now),
                    "app_id": app.id,
                    "app_slug": app.app_slug,
                    "name": name,
                    "key_prefix": parsed.prefix,
                    "key_suffix": parsed.suffix,
                    "key_hash": parsed.digest,
                    "permissions": permissions or [],
                    "metadata": {} if metadata is None else metadata,
                    "owner": owner,
                    "environment": environment,
                    "rate_limit_scheme_slug": rate_limit_scheme_slug,
                    "owner_user_id": owner_user_id if owner_user_id is not None else app.user_id,
                    "organization_id": (
                        organization_id if organization_id is not None else app.organization_id
                    ),
                    "workspace_id": workspace_id if workspace_id is not None else app.workspace_id,
                    "organization_membership_id": organization_membership_id,
                    "workspace_membership_id": workspace_membership_id,
                    "org_role_permissions": org_role_permissions or [],
                    "workspace_role_permissions": workspace_role_permissions or [],
                    "expires_at": expires_at,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if record.expires_at is not None and record.expires_at <= now:
                raise ValidationError.single("expires_at", "is not in the future")
            grants = f"grants only {app.permissions}" if app.permissions else "grants none"
            denied = [
                FieldError(field, f"{p!r} is not granted by app {app.app_slug!r}, which {grants}")
                for field in _GRANTED_FIELDS
                for p in _ungranted(app.permissions, getattr(record, field))
            ]
            if denied:
                raise ValidationError(denied)
            if record.rate_limit_scheme_slug is not None:
                _rules(session, record.rate_limit_scheme_slug, "rate_limit_scheme_slug")
            session.add_key(record)
            session.append_event("key.created", now, app_slug=app.app_slug, key_id=record.id)
            rules = _key_rules(session, record)
        return IssuedKey(key=record.public(rules), secret=parsed.secret)

    def list_api_keys(self, app_slug: str) -> list[ApiKey]:
        """Return every key of a live app, revoked ones included, oldest first. No secrets.

        Raises:
            NotFoundError: no live app has this slug.
        """
        with self.store.read() as session:
            app = self._live_app(session, app_slug)
            schemes = {s.slug: list(s.rules) for s in session.list_schemes()}
            records = session.list_keys(app.id)
        return [r.public(schemes.get(effective_scheme_slug(r, app) or "", [])) for r in records]

    def get_api_key(self, key_id: str) -> ApiKey:
        """Return one key by id. No secret, no hash.

        Raises:
            NotFoundError: no key has this id.
        """
        with self.store.read() as session:
            record = self._key(session, key_id)
            return record.public(_key_rules(session, record))

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
            rules = _key_rules(session, record)
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
            rules = _key_rules(session, record)
        self.cache.evict_key(record.id, announce=True)
        return IssuedKey(key=record.public(rules), secret=parsed.secret)

    @staticmethod
    def _key(session: StoreSession, key_id: str) -> KeyRecord:
        record = session.get_key(_require_str(key_id, "key_id"))
        if record is None:
            raise NotFoundError("key", key_id)
        return record

    @staticmethod
    def _replace_key(record: KeyRecord, **changes: Any) -> KeyRecord:
        return build(KeyRecord, record.dump_all() | changes)

    # -------------------------------------------------------------- verify
    def verify(
        self,
        credential: str | None = None,
        *,
        method: str = "GET",
        path: str = "/",
        permissions: Sequence[str] | str = (),
        resource: str | None = None,
        api_key: str | None = None,
        client_ip: str | None = None,
    ) -> Decision:
        """Verify a presented key, as the adapters do for each request.

        Args:
            credential: the ``Authorization`` value (``"Bearer sk_live_…"``) or the bare key.
            method: the request method.
            path: the request path, as the router sees it; the default resource.
            permissions: every one must be granted by the key.
            resource: checked against the app's resource patterns instead of the path.
            api_key: an ``X-API-Key`` value, if the request had one.
            client_ip: the client's address (for per-IP rate limits).

        Returns:
            The verdict: ``allowed``, ``status``, ``reason``, ``identity``, ``headers``.
            Never raises for bad input or an unreachable store (that is a 503 verdict).
        """
        facts, policy = self._request(
            credential, method, path, permissions, resource, api_key, client_ip
        )
        return self.verify_request(facts, policy)

    async def averify(
        self,
        credential: str | None = None,
        *,
        method: str = "GET",
        path: str = "/",
        permissions: Sequence[str] | str = (),
        resource: str | None = None,
        api_key: str | None = None,
        client_ip: str | None = None,
    ) -> Decision:
        """:meth:`verify` for async callers: a cache hit stays on the event loop, a store
        read runs in a worker thread."""
        facts, policy = self._request(
            credential, method, path, permissions, resource, api_key, client_ip
        )
        return await self.averify_request(facts, policy)

    # The two drivers of the pure pipeline (keysentry.core.pipeline): the only code written
    # twice. They sequence its steps and do the I/O it asks for; a cache hit on the
    # in-process limiter never leaves the event loop.
    def verify_request(self, facts: RequestFacts, policy: Policy) -> Decision:
        """Verify prepared request facts against a policy (what the WSGI adapter calls)."""
        lookup = begin(facts)
        if type(lookup) is not LookupKey:
            return lookup  # type: ignore[return-value]
        entry: object = self.cache.get(lookup.digest)
        if entry is MISS:
            entry = self._load(lookup)
        now = self._clock()
        hit = after_lookup(lookup, entry, facts, policy, now)  # type: ignore[arg-type]
        self._note_use(hit, now)
        if type(hit) is not Hit:
            return hit  # type: ignore[return-value]
        return after_hit(hit, self.limiter.hit(hit.checks, hit.now_ms))

    async def averify_request(self, facts: RequestFacts, policy: Policy) -> Decision:
        """Async :meth:`verify_request` (what the ASGI adapter calls): a store read runs in
        a worker thread."""
        lookup = begin(facts)
        if type(lookup) is not LookupKey:
            return lookup  # type: ignore[return-value]
        entry: object = self.cache.get(lookup.digest)
        if entry is MISS:
            entry = await _run_in_thread(self._load, lookup)
        now = self._clock()
        hit = after_lookup(lookup, entry, facts, policy, now)  # type: ignore[arg-type]
        self._note_use(hit, now)
        if type(hit) is not Hit:
            return hit  # type: ignore[return-value]
        limiter = self.limiter
        if limiter.remote:
            return after_hit(hit, await limiter.ahit(hit.checks, hit.now_ms))
        return after_hit(hit, limiter.hit(hit.checks, hit.now_ms))

    def _note_use(self, result: Decision | Hit, now: float) -> None:
        # a key is "used" when its secret matched and it was usable: the request may still
        # be refused for a permission, a resource or a rate limit
        identity = result.identity
        if identity is not None and (type(result) is Hit or result.reason in _USED):  # type: ignore[union-attr]
            self.usage.record(identity.key_id, now)

    def _load(self, lookup: LookupKey) -> LookupResult:
        try:
            return self.cache.load(lookup)
        except StoreError as exc:
            # never the key itself: the message names the store and the driver's error; one
            # warning per failed attempt, not one per request while the store stays down
            level = logging.DEBUG if type(exc) is StillDown else logging.WARNING
            logger.log(level, "keysentry: key lookup failed, answering 503: %s", exc)
            return UNAVAILABLE

    @staticmethod
    def _request(
        credential: str | None,
        method: str,
        path: str,
        permissions: Sequence[str] | str,
        resource: str | None,
        api_key: str | None,
        client_ip: str | None,
    ) -> tuple[RequestFacts, Policy]:
        if isinstance(permissions, str):
            permissions = (permissions,)
        facts = RequestFacts(
            method=normal_method(method),
            path=path if path.startswith("/") else "/" + path,
            authorization=(credential,) if credential is not None else (),
            api_key=(api_key,) if api_key is not None else (),
            client_ip=client_ip,
        )
        return facts, Policy(permissions=tuple(permissions), resource=resource)

    # ------------------------------------------------------------ adapters
    def require(
        self,
        *permissions: str,
        resource: str | None = None,
        api_key_header: str | None = None,
        read_authorization: bool | None = None,
    ) -> Callable[[F], F]:
        """Decorate a Starlette, FastAPI or Flask handler (sync or async) so that it runs
        only for a key holding every one of *permissions* (and *resource*, a template such
        as ``"users/{user_id}"`` filled from the path parameters). With *api_key_header*
        (e.g. ``"X-API-Key"``) the key is read from that header instead of
        ``Authorization``; *read_authorization=True* accepts either.

        Raises:
            ConfigurationError: a malformed permission or header name.
        """
        from keysentry.decorators import require

        return require(self, permissions, resource, api_key_header, read_authorization)

    def depends(
        self,
        *permissions: str,
        resource: str | None = None,
        api_key_header: str | None = None,
        read_authorization: bool | None = None,
    ) -> Callable[..., Any]:
        """A FastAPI dependency returning the verified :class:`Identity`; use it as
        ``Depends(ks.depends("users:read"))``. With *api_key_header* the key is read from
        that header instead of ``Authorization`` (declared in OpenAPI too);
        *read_authorization=True* accepts either. Needs ``keysentry[fastapi]``."""
        from keysentry.fastapi import dependency

        return dependency(self, permissions, resource, api_key_header, read_authorization)

    # -------------------------------------------------------------- events
    def list_events(self, after_seq: int = 0, limit: int = 100) -> list[Event]:
        """Return the audit trail: events with ``seq`` above *after_seq*, oldest first.

        Raises:
            ValidationError: *after_seq* or *limit* is not a suitable integer.
        """
        if not isinstance(after_seq, int) or after_seq < 0:
            raise ValidationError.single("after_seq", "must be an integer >= 0")
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ValidationError.single("limit", "must be an integer from 1 to 10000")
        with self.store.read() as session:
            return session.events_after(after_seq, limit)
