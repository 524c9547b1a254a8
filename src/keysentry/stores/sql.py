"""SQL store on SQLAlchemy Core: SQLite (default) and PostgreSQL (psycopg 3).

``sqlite:///path.db`` runs in WAL mode so readers never wait for the writer; write sessions
start with ``BEGIN IMMEDIATE`` so two writers queue on ``busy_timeout`` instead of failing
when a read lock cannot be upgraded. ``postgresql://`` uses psycopg 3 (``keysentry[postgres]``);
write sessions take one transaction-scoped advisory lock, which serializes keysentry's own
writers and makes event sequence numbers commit in order.

The schema is created on first use, inside a write transaction (so concurrent first starts
are safe), and carries a version row; a database of another version is refused.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from keysentry.errors import ConflictError, StoreError
from keysentry.models import ApiAuthApp, Event, EventKind, KeyRecord, RateLimitScheme
from keysentry.stores import _sql_credits, _sql_tickets, _sql_usage
from keysentry.stores._sql_engines import engine_for, schema_lock, serialize_writers
from keysentry.stores._sql_migrate import prepare_schema
from keysentry.stores._sql_schema import (
    APP_KEYS,
    APPS,
    EVENTS,
    EVENTS_AFTER,
    FIND_CANDIDATES,
    FIND_KEYS,
    GET_APP_BY_ID,
    GET_KEY,
    GET_SCHEME,
    KEYS,
    LAST_SEQ,
    NOT_SAVED,
    OWNER_KEYS,
    RECORD_USAGE,
    SCHEMES,
    app_row,
    key_row,
    scheme_row,
)
from keysentry.stores.base import Candidate, Ticket
from keysentry.usage import BucketCounts, UsageQuery

__all__ = ["SQLKeyStore"]


class _Session:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def _one(self, stmt: sa.Select[Any], **params: Any) -> dict[str, Any] | None:
        row = self._c.execute(stmt, params).mappings().first()
        return dict(row) if row is not None else None

    def _all(self, stmt: sa.Select[Any], **params: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self._c.execute(stmt, params).mappings()]

    # apps
    def get_app(self, app_slug: str) -> ApiAuthApp | None:
        row = self._one(
            sa.select(APPS).where(APPS.c.app_slug == app_slug, APPS.c.deleted_at.is_(None))
        )
        return ApiAuthApp.model_validate(row) if row else None

    def get_app_by_id(self, app_id: str) -> ApiAuthApp | None:
        row = self._one(GET_APP_BY_ID, app_id=app_id)
        return ApiAuthApp.model_validate(row) if row else None

    def list_apps(self) -> list[ApiAuthApp]:
        stmt = (
            sa.select(APPS)
            .where(APPS.c.deleted_at.is_(None))
            .order_by(APPS.c.created_at, APPS.c.id)
        )
        return [ApiAuthApp.model_validate(r) for r in self._all(stmt)]

    def add_app(self, app: ApiAuthApp) -> None:
        self._c.execute(APPS.insert().values(app_row(app)))

    def save_app(self, app: ApiAuthApp) -> None:
        self._c.execute(APPS.update().where(APPS.c.id == app.id).values(app_row(app)))

    # schemes
    def get_scheme(self, slug: str) -> RateLimitScheme | None:
        row = self._one(GET_SCHEME, slug=slug)
        return RateLimitScheme.model_validate(row) if row else None

    def list_schemes(self) -> list[RateLimitScheme]:
        stmt = sa.select(SCHEMES).order_by(SCHEMES.c.created_at, SCHEMES.c.slug)
        return [RateLimitScheme.model_validate(r) for r in self._all(stmt)]

    def add_scheme(self, scheme: RateLimitScheme) -> None:
        self._c.execute(SCHEMES.insert().values(scheme_row(scheme)))

    def save_scheme(self, scheme: RateLimitScheme) -> None:
        self._c.execute(
            SCHEMES.update().where(SCHEMES.c.slug == scheme.slug).values(scheme_row(scheme))
        )

    def remove_scheme(self, slug: str) -> None:
        self._c.execute(SCHEMES.delete().where(SCHEMES.c.slug == slug))

    def set_credits(self, key_id: str, credits: int | None, period: int, generation: int) -> None:
        _sql_credits.set_credits(self._c, key_id, credits, period, generation)

    def forget_usage(self, app_slug: str) -> None:
        self._c.execute(_sql_usage.USAGE.delete().where(_sql_usage.USAGE.c.app_slug == app_slug))

    def scheme_users(self, slug: str) -> list[str]:
        live = APPS.c.deleted_at.is_(None)
        apps = self._c.execute(
            sa.select(APPS.c.app_slug).where(live, APPS.c.rate_limit_scheme_slug == slug)
        ).scalars()
        keys = self._c.execute(
            sa.select(KEYS.c.id)
            .join(APPS, APPS.c.id == KEYS.c.app_id)
            .where(live, KEYS.c.revoked_at.is_(None), KEYS.c.rate_limit_scheme_slug == slug)
        ).scalars()
        return [f"app {a!r}" for a in apps] + [f"key {k!r}" for k in keys]

    # keys
    def get_key(self, key_id: str) -> KeyRecord | None:
        row = self._one(GET_KEY, key_id=key_id)
        return KeyRecord.model_validate(row) if row else None

    def list_keys(self, app_id: str, owner_user_id: str | None = None) -> list[KeyRecord]:
        if owner_user_id is None:
            rows = self._all(APP_KEYS, app_id=app_id)
        else:
            rows = self._all(OWNER_KEYS, app_id=app_id, owner_user_id=owner_user_id)
        return [KeyRecord.model_validate(r) for r in rows]

    def add_key(self, record: KeyRecord) -> None:
        self._c.execute(KEYS.insert().values(key_row(record)))

    def save_key(self, record: KeyRecord) -> None:
        row = key_row(record, skip=NOT_SAVED)
        self._c.execute(KEYS.update().where(KEYS.c.id == record.id).values(row))

    # events
    def append_event(
        self,
        kind: EventKind,
        at: datetime,
        *,
        app_slug: str | None = None,
        key_id: str | None = None,
        scheme_slug: str | None = None,
    ) -> Event:
        values = {
            "at": at,
            "kind": kind,
            "app_slug": app_slug,
            "key_id": key_id,
            "scheme_slug": scheme_slug,
        }
        result = self._c.execute(EVENTS.insert().values(values).returning(EVENTS.c.seq))
        return Event(seq=result.scalar_one(), **values)

    def events_after(self, seq: int, limit: int = 1000) -> list[Event]:
        return [Event.model_validate(r) for r in self._all(EVENTS_AFTER, seq=seq, limit=limit)]

    def last_event_seq(self) -> int:
        return int(self._c.execute(LAST_SEQ).scalar_one())


def _describe(exc: SQLAlchemyError) -> str:
    # Never str(exc): SQLAlchemy appends the statement's parameters, which hold key hashes.
    orig = getattr(exc, "orig", None)
    detail = str(orig).strip().splitlines()[0] if orig is not None and str(orig).strip() else ""
    name = type(orig if orig is not None else exc).__name__
    return f"{name}: {detail}" if detail else name


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # SQLAlchemy's recipe for os.fork(): the child must not use (nor close) the parent's
    # pooled connections; it opens its own on first use.
    for engine in list(_engines):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLKeyStore:
    """A :class:`~keysentry.stores.base.KeyStore` on SQLite or PostgreSQL.

    Args:
        url: ``sqlite:///path.db``, ``sqlite://`` (in memory) or ``postgresql://user@host/db``.

    Raises:
        ConfigurationError: unknown URL scheme, or psycopg missing for PostgreSQL.
    """

    def __init__(self, url: str) -> None:
        self._engine = engine_for(url)
        _engines.add(self._engine)
        self._dialect = self._engine.dialect.name
        self._ready = False
        self._schema_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLKeyStore({self._engine.url.render_as_string(hide_password=True)!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tests and tooling)."""
        return self._engine

    @contextmanager
    def _transaction(self, *, write: bool, serialized: bool = True) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                if write:
                    conn.execution_options(keysentry_write=True)
                with conn.begin():
                    if write and serialized:
                        serialize_writers(conn)
                    yield conn
        except IntegrityError as exc:
            raise ConflictError(
                f"the change clashes with a stored record ({_describe(exc)})"
            ) from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"{self._dialect} store failed: {_describe(exc)}") from exc

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with self._schema_lock:
            if self._ready:
                return
            # SQLite answers "database is locked" at once, whatever the busy timeout, to
            # processes opening a new file together while another sets up WAL (seen about 1
            # in 10 times with 8 at once): the first start tries again, for up to 5 s
            deadline = time.monotonic() + 5
            while True:
                try:
                    self._create_schema()
                    break
                except StoreError as exc:
                    locked = "database is locked" in str(exc) and self._dialect == "sqlite"
                    if not locked or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self._ready = True

    def _create_schema(self) -> None:
        """Make the tables (if missing), check or upgrade the version, in one write."""
        with self._transaction(write=True, serialized=False) as conn, schema_lock(conn):
            prepare_schema(conn)

    @contextmanager
    def read(self) -> Iterator[_Session]:
        """A read transaction."""
        self._ensure_schema()
        with self._transaction(write=False) as conn:
            yield _Session(conn)

    @contextmanager
    def write(self) -> Iterator[_Session]:
        """A serialized write transaction, committed when the block exits cleanly."""
        self._ensure_schema()
        with self._transaction(write=True) as conn:
            yield _Session(conn)

    def find_keys(self, key_prefix: str, key_suffix: str) -> list[KeyRecord]:
        """Keys whose current or grace-period ``(prefix, suffix)`` matches."""
        with self.read() as session:
            rows = session._all(FIND_KEYS, prefix=key_prefix, suffix=key_suffix)
        return [KeyRecord.model_validate(r) for r in rows]

    def find_candidates(self, key_prefix: str, key_suffix: str) -> list[Candidate]:
        """The id and hashes of the keys :meth:`find_keys` would return."""
        self._ensure_schema()
        with self._transaction(write=False) as conn:
            rows = conn.execute(FIND_CANDIDATES, {"prefix": key_prefix, "suffix": key_suffix})
            return [Candidate(*row) for row in rows if row[0] is not None]

    def record_usage(self, used: Mapping[str, datetime]) -> None:
        """Move each key's ``last_used_at`` forward, in one transaction of one batched
        statement. Not serialized with the management writers (it appends no event)."""
        if not used:
            return
        self._ensure_schema()
        params = [{"key_id": k, "used_at": at} for k, at in sorted(used.items())]
        with self._transaction(write=True, serialized=False) as conn:
            conn.execute(RECORD_USAGE, params)

    def add_usage(self, buckets: BucketCounts) -> None:
        """Add to the usage buckets: one upsert statement, one transaction. Not serialized
        with the management writers (it appends no event)."""
        if not buckets:
            return
        self._ensure_schema()
        with self._transaction(write=True, serialized=False) as conn:
            _sql_usage.add_usage(conn, buckets)

    def read_usage(self, query: UsageQuery) -> list[tuple[int, str, int]]:
        """The query's points, summed per bucket and group."""
        self._ensure_schema()
        with self._transaction(write=False) as conn:
            return _sql_usage.read_usage(conn, query)

    def top_keys(
        self, app_slug: str, granularity: int, start: int, end: int, by: str, limit: int
    ) -> list[tuple[str, int, int]]:
        """The app's keys with the most requests (or refusals) over the range."""
        self._ensure_schema()
        with self._transaction(write=False) as conn:
            return _sql_usage.top_keys(conn, app_slug, granularity, start, end, by, limit)

    def prune_usage(self, cutoffs: Mapping[int, int], events_before: datetime | None) -> int:
        """Delete buckets and events past their retention."""
        self._ensure_schema()
        with self._transaction(write=True, serialized=False) as conn:
            return _sql_usage.prune_usage(conn, cutoffs, events_before)

    def lease_credits(
        self, key_id: str, generation: int, period: int, refill_amount: int | None, cost: int
    ) -> tuple[int, int] | None:
        """Lease credits: a conditional update, in a transaction of its own."""
        self._ensure_schema()
        with self._transaction(write=True, serialized=False) as conn:
            return _sql_credits.lease_credits(conn, key_id, generation, period, refill_amount,
                                              cost)  # fmt: skip

    def return_credits(self, key_id: str, generation: int, period: int, credits: int) -> None:
        """Give back unspent leased credits."""
        self._ensure_schema()
        with self._transaction(write=True, serialized=False) as conn:
            _sql_credits.return_credits(conn, key_id, generation, period, credits)

    def add_ticket(self, ticket: Ticket) -> None:
        """Store a portal link (one transaction: the insert and the old links' delete)."""
        self._ensure_schema()
        with self._transaction(write=True, serialized=False) as conn:
            _sql_tickets.add_ticket(conn, ticket)

    def use_ticket(self, token_hash: str, now: datetime) -> Ticket | None:
        """Spend a portal link: one conditional update decides between processes."""
        self._ensure_schema()
        with self._transaction(write=True, serialized=False) as conn:
            return _sql_tickets.use_ticket(conn, token_hash, now)

    def ticket_in_force(self, ticket_id: str) -> bool:
        """Whether the link with this id is still stored (a primary-key read)."""
        self._ensure_schema()
        with self._transaction(write=False) as conn:
            return _sql_tickets.ticket_in_force(conn, ticket_id)

    def end_tickets(self, app_slug: str, owner_user_id: str) -> int:
        """Forget the owner's links of the app (one delete)."""
        self._ensure_schema()
        with self._transaction(write=True, serialized=False) as conn:
            return _sql_tickets.end_tickets(conn, app_slug, owner_user_id)

    def shared_secret(self, name: str) -> str:
        """The secret under *name*, made by the first process that asks."""
        self._ensure_schema()
        with self._transaction(write=False) as conn:
            value = _sql_tickets.read_secret(conn, name)
        if value is not None:
            return value
        try:
            with self._transaction(write=True, serialized=False) as conn:
                return _sql_tickets.write_secret(conn, name)
        except ConflictError:  # another process made it first: theirs stands
            with self._transaction(write=False) as conn:
                value = _sql_tickets.read_secret(conn, name)
            if value is None:
                raise StoreError(f"the shared secret {name!r} could not be stored") from None
            return value

    def close(self) -> None:
        """Dispose of the connection pool."""
        self._engine.dispose()
