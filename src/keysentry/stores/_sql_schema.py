"""The SQL schema (tables, the statements built once, rows from records), shared by every
SQL dialect keysentry runs on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

from keysentry._fields import MAX_SCOPE_ID
from keysentry.models import ApiAuthApp, KeyRecord, RateLimitScheme

__all__ = [
    "APPS",
    "EVENTS",
    "EVENTS_AFTER",
    "FIND_CANDIDATES",
    "FIND_KEYS",
    "GET_APP_BY_ID",
    "GET_KEY",
    "GET_SCHEME",
    "ID",
    "IDENT",
    "KEYS",
    "LAST_SEQ",
    "META",
    "METADATA",
    "NOT_SAVED",
    "RECORD_USAGE",
    "ROTATING_INDEX",
    "SCHEMES",
    "SLUG",
    "UTCDateTime",
    "app_row",
    "key_row",
    "scheme_row",
]


# the dialects whose DATETIME keeps no offset: UTC is stored naive and read back as UTC
_NAIVE = frozenset({"sqlite", "mysql", "mariadb"})


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite and MySQL (which keep no offset) as on
    PostgreSQL; to the microsecond on MySQL too (its DATETIME drops fractions by default)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name in _NAIVE else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


METADATA = sa.MetaData()


def _on(*dialects: str) -> Any:
    """A ``ddl_if`` condition: create the index on these dialects only."""

    def check(ddl: Any, target: Any, bind: Any, **kw: Any) -> bool:
        return kw["dialect"].name in dialects

    return check


# MySQL: InnoDB, and a binary collation: key suffixes and ids are case-sensitive base62, and
# the default collations compare case-insensitively (other dialects ignore these)
_MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
ID = sa.String(64)
SLUG = sa.String(64)
IDENT = sa.String(MAX_SCOPE_ID)

META = sa.Table(
    "keysentry_meta",
    METADATA,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
    **_MYSQL,
)

APPS = sa.Table(
    "keysentry_apps",
    METADATA,
    sa.Column("id", ID, primary_key=True),
    sa.Column("app_slug", SLUG, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_prefix", sa.String(32), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("permissions", sa.JSON, nullable=False),
    sa.Column("resources", sa.JSON, nullable=False),
    sa.Column("rate_limit_scheme_slug", SLUG),
    sa.Column("user_id", IDENT),
    sa.Column("organization_id", IDENT),
    sa.Column("workspace_id", IDENT),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("deleted_at", UTCDateTime),
    sa.Column("allowed_ips", sa.JSON),  # null (a version-1 row): no list
    # A slug is unique among live apps; a deleted app's slug may be reused, and its keys
    # stay bound to the deleted app's id, so they never come back to life.
    sa.Index(
        "keysentry_apps_live_slug",
        "app_slug",
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    ).ddl_if(callable_=_on("sqlite", "postgresql")),
    # MySQL has no partial index: the slug is then unique among live apps by the serialized
    # writers' own check alone (management reads and inserts in one locked session)
    sa.Index("keysentry_apps_slug", "app_slug").ddl_if(callable_=_on("mysql", "mariadb")),
    **_MYSQL,
)

SCHEMES = sa.Table(
    "keysentry_schemes",
    METADATA,
    sa.Column("slug", SLUG, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("rules", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    **_MYSQL,
)

KEYS = sa.Table(
    "keysentry_keys",
    METADATA,
    sa.Column("id", ID, primary_key=True),
    sa.Column("app_id", ID, sa.ForeignKey("keysentry_apps.id"), nullable=False, index=True),
    sa.Column("app_slug", SLUG, nullable=False),
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
    sa.Column("rate_limit_scheme_slug", SLUG),
    sa.Column("owner_user_id", IDENT),
    sa.Column("organization_id", IDENT),
    sa.Column("workspace_id", IDENT),
    sa.Column("organization_membership_id", IDENT),
    sa.Column("workspace_membership_id", IDENT),
    sa.Column("org_role_permissions", sa.JSON, nullable=False),
    sa.Column("workspace_role_permissions", sa.JSON, nullable=False),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
    sa.Column("revoked_reason", sa.String(500)),
    sa.Column("allowed_ips", sa.JSON),  # null (a version-1 row): no list
    # the balance (null: unlimited), written only by the credit statements, never by a
    # whole-record save (which would undo the spending of other processes)
    sa.Column("credits", sa.BigInteger),
    sa.Column("refill", sa.JSON),
    sa.Column("credit_period", sa.BigInteger),
    sa.Column("credit_generation", sa.Integer),
    sa.Index("keysentry_keys_lookup", "key_prefix", "key_suffix"),
    sa.Index("keysentry_keys_previous_lookup", "key_prefix", "previous_key_suffix"),
    **_MYSQL,
)

# The grace-period suffix of rotated keys only (SQLite, PostgreSQL): most keys never rotate,
# and with their NULLs in the statistics SQLite's planner, after ANALYZE, judges the full
# index useless and scans the table for the grace-period half of the candidate lookup.
ROTATING_INDEX = sa.Index(
    "keysentry_keys_rotating",
    KEYS.c.key_prefix,
    KEYS.c.previous_key_suffix,
    sqlite_where=sa.text("previous_key_suffix IS NOT NULL"),
    postgresql_where=sa.text("previous_key_suffix IS NOT NULL"),
).ddl_if(callable_=_on("sqlite", "postgresql"))

# One owner's keys of an app (the portal's page, list_api_keys(owner_user_id=...)) without
# reading the app's every key.
OWNER_INDEX = sa.Index("keysentry_keys_owner", KEYS.c.app_id, KEYS.c.owner_user_id)

EVENTS = sa.Table(
    "keysentry_events",
    METADATA,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("app_slug", SLUG),
    sa.Column("key_id", ID),
    sa.Column("scheme_slug", SLUG),
    sqlite_autoincrement=True,  # never reuse a seq, even after deletes
    **_MYSQL,
)


# Statements on the verification path are built once: composing an expression costs more
# than running the indexed query it describes (benchmarks/stores.py).
FIND_KEYS = sa.select(KEYS).where(
    KEYS.c.key_prefix == sa.bindparam("prefix"),
    sa.or_(
        KEYS.c.key_suffix == sa.bindparam("suffix"),
        KEYS.c.previous_key_suffix == sa.bindparam("suffix"),
    ),
)
# Two index lookups (current suffix, grace-period suffix; an OR of the two would scan every
# key of the prefix), left-joined to one constant row: a row of NULLs when no key matches, so
# the database sends and the driver decodes the same either way and the time does not tell.
_CANDIDATE_COLUMNS = (KEYS.c.id, KEYS.c.key_hash, KEYS.c.previous_key_hash)
_MATCHES = sa.union_all(
    sa.select(*_CANDIDATE_COLUMNS).where(
        KEYS.c.key_prefix == sa.bindparam("prefix"),
        KEYS.c.key_suffix == sa.bindparam("suffix"),
    ),
    sa.select(*_CANDIDATE_COLUMNS).where(
        KEYS.c.key_prefix == sa.bindparam("prefix"),
        KEYS.c.previous_key_suffix == sa.bindparam("suffix"),
        KEYS.c.key_suffix != sa.bindparam("suffix"),
    ),
).subquery("matches")
_ONE_ROW = sa.select(sa.literal(1).label("one")).subquery("one_row")
FIND_CANDIDATES = sa.select(
    _MATCHES.c.id, _MATCHES.c.key_hash, _MATCHES.c.previous_key_hash
).select_from(_ONE_ROW.outerjoin(_MATCHES, sa.true()))
GET_KEY = sa.select(KEYS).where(KEYS.c.id == sa.bindparam("key_id"))
GET_APP_BY_ID = sa.select(APPS).where(APPS.c.id == sa.bindparam("app_id"))
GET_SCHEME = sa.select(SCHEMES).where(SCHEMES.c.slug == sa.bindparam("slug"))
APP_KEYS = (
    sa.select(KEYS)
    .where(KEYS.c.app_id == sa.bindparam("app_id"))
    .order_by(KEYS.c.created_at, KEYS.c.id)
)
# one owner's keys of an app, by keysentry_keys_owner (the portal reads it on every page)
OWNER_KEYS = APP_KEYS.where(KEYS.c.owner_user_id == sa.bindparam("owner_user_id"))
# polled by every process once per sync_interval: an index range scan that is empty when
# nothing changed
EVENTS_AFTER = (
    sa.select(EVENTS)
    .where(EVENTS.c.seq > sa.bindparam("seq"))
    .order_by(EVENTS.c.seq)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
LAST_SEQ = sa.select(sa.func.coalesce(sa.func.max(EVENTS.c.seq), 0))


_NOT_COLUMNS = frozenset({"rate_limits"})
# last_used_at is the usage writer's (record_usage), the balance the credit statements': a
# revocation must not undo either
NOT_SAVED = frozenset({"rate_limits", "last_used_at", "credits", "credit_period",
                       "credit_generation"})  # fmt: skip


def key_row(record: KeyRecord, skip: frozenset[str] = _NOT_COLUMNS) -> dict[str, Any]:
    return {k: v for k, v in record.dump_all().items() if k not in skip}


_used_at = sa.bindparam("used_at", type_=UTCDateTime())
RECORD_USAGE = (
    KEYS.update()
    .where(KEYS.c.id == sa.bindparam("key_id"))
    .where(sa.or_(KEYS.c.last_used_at.is_(None), KEYS.c.last_used_at < _used_at))
    .values(last_used_at=_used_at)
)


def app_row(app: ApiAuthApp) -> dict[str, Any]:
    return app.model_dump(exclude={"rate_limits"})


def scheme_row(scheme: RateLimitScheme) -> dict[str, Any]:
    return scheme.model_dump()
