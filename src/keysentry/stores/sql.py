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

import importlib.util
import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from keysentry.errors import ConfigurationError, ConflictError, StoreError
from keysentry.models import ApiAuthApp, Event, EventKind, KeyRecord, RateLimitScheme
from keysentry.stores.base import SCHEMA_VERSION, Candidate

__all__ = ["SQLKeyStore"]

# pg_advisory_xact_lock key for keysentry's writers: b"keys" as an int.
_PG_WRITE_LOCK = 0x6B657973


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps no offset) as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_metadata = sa.MetaData()
_id = sa.String(64)
_slug = sa.String(64)
_ident = sa.String(128)

_meta = sa.Table(
    "keysentry_meta",
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

_apps = sa.Table(
    "keysentry_apps",
    _metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("app_slug", _slug, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_prefix", sa.String(32), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("permissions", sa.JSON, nullable=False),
    sa.Column("resources", sa.JSON, nullable=False),
    sa.Column("rate_limit_scheme_slug", _slug),
    sa.Column("user_id", _ident),
    sa.Column("organization_id", _ident),
    sa.Column("workspace_id", _ident),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("deleted_at", UTCDateTime),
    # A slug is unique among live apps; a deleted app's slug may be reused, and its keys
    # stay bound to the deleted app's id, so they never come back to life.
    sa.Index(
        "keysentry_apps_live_slug",
        "app_slug",
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    ),
)

_schemes = sa.Table(
    "keysentry_schemes",
    _metadata,
    sa.Column("slug", _slug, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("rules", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

_keys = sa.Table(
    "keysentry_keys",
    _metadata,
    sa.Column("id", _id, primary_key=True),
    sa.Column("app_id", _id, sa.ForeignKey("keysentry_apps.id"), nullable=False, index=True),
    sa.Column("app_slug", _slug, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_prefix", sa.String(32), nullable=False),
    sa.Column("key_suffix", sa.String(8), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("previous_key_hash", sa.String(64)),
    sa.Column("previous_key_suffix", sa.String(8)),
    sa.Column("previous_expires_at", UTCDateTime),
    sa.Column("permissions", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("owner", sa.String(200)),
    sa.Column("environment", sa.String(64)),
    sa.Column("rate_limit_scheme_slug", _slug),
    sa.Column("owner_user_id", _ident),
    sa.Column("organization_id", _ident),
    sa.Column("workspace_id", _ident),
    sa.Column("organization_membership_id", _ident),
    sa.Column("workspace_membership_id", _ident),
    sa.Column("org_role_permissions", sa.JSON, nullable=False),
    sa.Column("workspace_role_permissions", sa.JSON, nullable=False),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
    sa.Column("revoked_reason", sa.String(500)),
    sa.Index("keysentry_keys_lookup", "key_prefix", "key_suffix"),
    sa.Index("keysentry_keys_previous_lookup", "key_prefix", "previous_key_suffix"),
)

_events = sa.Table(
    "keysentry_events",
    _metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("app_slug", _slug),
    sa.Column("key_id", _id),
    sa.Column("scheme_slug", _slug),
    sqlite_autoincrement=True,  # never reuse a seq, even after deletes
)


# Statements on the verification path are built once: composing an expression costs more
# than running the indexed query it describes (benchmarks/stores.py).
_FIND_KEYS = sa.select(_keys).where(
    _keys.c.key_prefix == sa.bindparam("prefix"),
    sa.or_(
        _keys.c.key_suffix == sa.bindparam("suffix"),
        _keys.c.previous_key_suffix == sa.bindparam("suffix"),
    ),
)
# Two index lookups (current suffix, grace-period suffix; an OR of the two would scan every
# key of the prefix), left-joined to one constant row: a row of NULLs when no key matches, so
# the database sends and the driver decodes the same either way and the time does not tell.
_CANDIDATE_COLUMNS = (_keys.c.id, _keys.c.key_hash, _keys.c.previous_key_hash)
_MATCHES = sa.union_all(
    sa.select(*_CANDIDATE_COLUMNS).where(
        _keys.c.key_prefix == sa.bindparam("prefix"),
        _keys.c.key_suffix == sa.bindparam("suffix"),
    ),
    sa.select(*_CANDIDATE_COLUMNS).where(
        _keys.c.key_prefix == sa.bindparam("prefix"),
        _keys.c.previous_key_suffix == sa.bindparam("suffix"),
        _keys.c.key_suffix != sa.bindparam("suffix"),
    ),
).subquery("matches")
_ONE_ROW = sa.select(sa.literal(1).label("one")).subquery("one_row")
_FIND_CANDIDATES = sa.select(
    _MATCHES.c.id, _MATCHES.c.key_hash, _MATCHES.c.previous_key_hash
).select_from(_ONE_ROW.outerjoin(_MATCHES, sa.true()))
_GET_KEY = sa.select(_keys).where(_keys.c.id == sa.bindparam("key_id"))
_GET_APP_BY_ID = sa.select(_apps).where(_apps.c.id == sa.bindparam("app_id"))
_GET_SCHEME = sa.select(_schemes).where(_schemes.c.slug == sa.bindparam("slug"))
# polled by every process once per sync_interval: an index range scan that is empty when
# nothing changed
_EVENTS_AFTER = (
    sa.select(_events)
    .where(_events.c.seq > sa.bindparam("seq"))
    .order_by(_events.c.seq)
    .limit(sa.bindparam("limit"))
)
_LAST_SEQ = sa.select(sa.func.coalesce(sa.func.max(_events.c.seq), 0))


_NOT_COLUMNS = frozenset({"rate_limits"})
# last_used_at is the usage writer's (record_usage): a revocation must not undo it
_NOT_SAVED = frozenset({"rate_limits", "last_used_at"})


def _key_row(record: KeyRecord, skip: frozenset[str] = _NOT_COLUMNS) -> dict[str, Any]:
    return {k: v for k, v in record.dump_all().items() if k not in skip}


_used_at = sa.bindparam("used_at", type_=UTCDateTime())
_RECORD_USAGE = (
    _keys.update()
    .where(_keys.c.id == sa.bindparam("key_id"))
    .where(sa.or_(_keys.c.last_used_at.is_(None), _keys.c.last_used_at < _used_at))
    .values(last_used_at=_used_at)
)


def _app_row(app: ApiAuthApp) -> dict[str, Any]:
    return app.model_dump(exclude={"rate_limits"})


def _scheme_row(scheme: RateLimitScheme) -> dict[str, Any]:
    return scheme.model_dump()


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
            sa.select(_apps).where(_apps.c.app_slug == app_slug, _apps.c.deleted_at.is_(None))
        )
        return ApiAuthApp.model_validate(row) if row else None

    def get_app_by_id(self, app_id: str) -> ApiAuthApp | None:
        row = self._one(_GET_APP_BY_ID, app_id=app_id)
        return ApiAuthApp.model_validate(row) if row else None

    def list_apps(self) -> list[ApiAuthApp]:
        stmt = (
            sa.select(_apps)
            .where(_apps.c.deleted_at.is_(None))
            .order_by(_apps.c.created_at, _apps.c.id)
        )
        return [ApiAuthApp.model_validate(r) for r in self._all(stmt)]

    def add_app(self, app: ApiAuthApp) -> None:
        self._c.execute(_apps.insert().values(_app_row(app)))

    def save_app(self, app: ApiAuthApp) -> None:
        self._c.execute(_apps.update().where(_apps.c.id == app.id).values(_app_row(app)))

    # schemes
    def get_scheme(self, slug: str) -> RateLimitScheme | None:
        row = self._one(_GET_SCHEME, slug=slug)
        return RateLimitScheme.model_validate(row) if row else None

    def list_schemes(self) -> list[RateLimitScheme]:
        stmt = sa.select(_schemes).order_by(_schemes.c.created_at, _schemes.c.slug)
        return [RateLimitScheme.model_validate(r) for r in self._all(stmt)]

    def add_scheme(self, scheme: RateLimitScheme) -> None:
        self._c.execute(_schemes.insert().values(_scheme_row(scheme)))

    def save_scheme(self, scheme: RateLimitScheme) -> None:
        self._c.execute(
            _schemes.update().where(_schemes.c.slug == scheme.slug).values(_scheme_row(scheme))
        )

    def remove_scheme(self, slug: str) -> None:
        self._c.execute(_schemes.delete().where(_schemes.c.slug == slug))

    def scheme_users(self, slug: str) -> list[str]:
        live = _apps.c.deleted_at.is_(None)
        apps = self._c.execute(
            sa.select(_apps.c.app_slug).where(live, _apps.c.rate_limit_scheme_slug == slug)
        ).scalars()
        keys = self._c.execute(
            sa.select(_keys.c.id)
            .join(_apps, _apps.c.id == _keys.c.app_id)
            .where(live, _keys.c.revoked_at.is_(None), _keys.c.rate_limit_scheme_slug == slug)
        ).scalars()
        return [f"app {a!r}" for a in apps] + [f"key {k!r}" for k in keys]

    # keys
    def get_key(self, key_id: str) -> KeyRecord | None:
        row = self._one(_GET_KEY, key_id=key_id)
        return KeyRecord.model_validate(row) if row else None

    def list_keys(self, app_id: str) -> list[KeyRecord]:
        stmt = (
            sa.select(_keys)
            .where(_keys.c.app_id == app_id)
            .order_by(_keys.c.created_at, _keys.c.id)
        )
        return [KeyRecord.model_validate(r) for r in self._all(stmt)]

    def add_key(self, record: KeyRecord) -> None:
        self._c.execute(_keys.insert().values(_key_row(record)))

    def save_key(self, record: KeyRecord) -> None:
        row = _key_row(record, skip=_NOT_SAVED)
        self._c.execute(_keys.update().where(_keys.c.id == record.id).values(row))

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
        result = self._c.execute(_events.insert().values(values).returning(_events.c.seq))
        return Event(seq=result.scalar_one(), **values)

    def events_after(self, seq: int, limit: int = 1000) -> list[Event]:
        return [Event.model_validate(r) for r in self._all(_EVENTS_AFTER, seq=seq, limit=limit)]

    def last_event_seq(self) -> int:
        return int(self._c.execute(_LAST_SEQ).scalar_one())


def _engine_for(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError) as exc:
        raise ConfigurationError(f"cannot parse database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is None:
            raise ConfigurationError(
                "PostgreSQL needs psycopg 3: pip install 'keysentry[postgres]'"
            )
        parsed = parsed.set(drivername="postgresql+psycopg")
        # a slow statement is cancelled after 5 s, unless the URL sets its own timeout
        options = str(parsed.query.get("options", ""))
        if "statement_timeout" not in options:
            options = f"{options} -c statement_timeout=5000".strip()
        parsed = parsed.update_query_dict({"options": options})
        return sa.create_engine(
            parsed,
            hide_parameters=True,  # key hashes stay out of logs and error messages
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            pool_timeout=5,
            connect_args={"connect_timeout": 5},
        )
    if backend == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        engine = sa.create_engine(
            parsed,
            hide_parameters=True,
            # one shared connection, or every new connection would see a new empty database
            poolclass=StaticPool if in_memory else None,
            connect_args={"check_same_thread": False, "timeout": 5},
        )
        _configure_sqlite(engine, wal=not in_memory)
        return engine
    raise ConfigurationError(
        f"unsupported database URL scheme {parsed.drivername!r}: "
        "use sqlite:///path.db, postgresql://... or memory://"
    )


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    # SQLAlchemy's documented recipe for real SQLite transactions: stop pysqlite from
    # issuing its own BEGIN, then emit ours, IMMEDIATE for writers.
    @sa_event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("keysentry_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


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
        self._engine = _engine_for(url)
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
                    if write and serialized and self._dialect == "postgresql":
                        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_WRITE_LOCK)))
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
            with self._transaction(write=True) as conn:
                _metadata.create_all(conn, checkfirst=True)
                version = conn.execute(
                    sa.select(_meta.c.value).where(_meta.c.name == "schema_version")
                ).scalar()
                if version is None:
                    conn.execute(
                        _meta.insert().values(name="schema_version", value=str(SCHEMA_VERSION))
                    )
                elif version != str(SCHEMA_VERSION):
                    raise StoreError(
                        f"the database holds keysentry schema version {version}; "
                        f"this keysentry uses version {SCHEMA_VERSION}"
                    )
            self._ready = True

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
            rows = session._all(_FIND_KEYS, prefix=key_prefix, suffix=key_suffix)
        return [KeyRecord.model_validate(r) for r in rows]

    def find_candidates(self, key_prefix: str, key_suffix: str) -> list[Candidate]:
        """The id and hashes of the keys :meth:`find_keys` would return."""
        self._ensure_schema()
        with self._transaction(write=False) as conn:
            rows = conn.execute(_FIND_CANDIDATES, {"prefix": key_prefix, "suffix": key_suffix})
            return [Candidate(*row) for row in rows if row[0] is not None]

    def record_usage(self, used: Mapping[str, datetime]) -> None:
        """Move each key's ``last_used_at`` forward, in one transaction of one batched
        statement. Not serialized with the management writers (it appends no event)."""
        if not used:
            return
        self._ensure_schema()
        params = [{"key_id": k, "used_at": at} for k, at in sorted(used.items())]
        with self._transaction(write=True, serialized=False) as conn:
            conn.execute(_RECORD_USAGE, params)

    def close(self) -> None:
        """Dispose of the connection pool."""
        self._engine.dispose()
