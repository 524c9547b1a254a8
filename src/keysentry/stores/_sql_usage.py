"""The usage buckets' table and statements (:mod:`keysentry.usage`), on every SQL dialect.

A bucket is one row per (app, granularity, start, key, outcome); writers add to it with the
dialect's upsert (``ON CONFLICT … DO UPDATE`` on SQLite and PostgreSQL, ``ON DUPLICATE KEY
UPDATE`` on MySQL), so the database merges the increments of every process. Rows go in
primary-key order, so two writers lock shared rows in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from keysentry.stores._sql_schema import _MYSQL, EVENTS, ID, METADATA, SLUG, UTCDateTime
from keysentry.usage import BucketCounts, UsageQuery

__all__ = ["USAGE", "add_usage", "prune_usage", "read_usage", "top_keys"]

USAGE = sa.Table(
    "keysentry_usage",
    METADATA,
    sa.Column("app_slug", SLUG, primary_key=True),
    sa.Column("granularity", sa.Integer, primary_key=True),  # seconds: 60, 3600, 86400
    sa.Column("bucket_start", sa.BigInteger, primary_key=True),  # Unix seconds, UTC
    sa.Column("key_id", ID, primary_key=True),  # "" when the secret matched no key
    sa.Column("outcome", sa.String(32), primary_key=True),
    sa.Column("requests", sa.BigInteger, nullable=False),
    # one key's usage (GET /api-auth/keys/{id}/usage), and pruning by age
    sa.Index("keysentry_usage_key", "key_id", "granularity", "bucket_start"),
    sa.Index("keysentry_usage_age", "granularity", "bucket_start"),
    **_MYSQL,
)
_KEY = ("app_slug", "granularity", "bucket_start", "key_id", "outcome")


def _upsert(dialect: str) -> Any:
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects import mysql

        insert = mysql.insert(USAGE)
        return insert.on_duplicate_key_update(requests=USAGE.c.requests + insert.inserted.requests)
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        pg = postgresql.insert(USAGE)
        return pg.on_conflict_do_update(
            index_elements=list(_KEY), set_={"requests": USAGE.c.requests + pg.excluded.requests}
        )
    from sqlalchemy.dialects import sqlite

    lite = sqlite.insert(USAGE)
    return lite.on_conflict_do_update(
        index_elements=list(_KEY), set_={"requests": USAGE.c.requests + lite.excluded.requests}
    )


_UPSERTS: dict[str, Any] = {}


def add_usage(conn: Connection, buckets: BucketCounts) -> None:
    """Add *buckets* to the stored counts: one statement, every row in key order."""
    dialect = conn.dialect.name
    statement = _UPSERTS.get(dialect)
    if statement is None:
        statement = _UPSERTS[dialect] = _upsert(dialect)
    rows = [
        {"app_slug": a, "key_id": k, "outcome": o, "granularity": g, "bucket_start": s,
         "requests": n}
        for (a, k, o, g, s), n in sorted(buckets.items(), key=lambda i: _order(i[0]))
    ]  # fmt: skip
    conn.execute(statement, rows)


def _order(bucket: tuple[str, str, str, int, int]) -> tuple[str, int, int, str, str]:
    app, key, outcome, granularity, start = bucket
    return app, granularity, start, key, outcome


def read_usage(conn: Connection, query: UsageQuery) -> list[tuple[int, str, int]]:
    """The query's points: summed per (bucket start, group), in that order."""
    group = USAGE.c.outcome if query.group_by == "outcome" else USAGE.c.key_id
    where = [
        USAGE.c.app_slug == query.app_slug,
        USAGE.c.granularity == query.granularity,
        USAGE.c.bucket_start >= query.start,
        USAGE.c.bucket_start < query.end,
    ]
    if query.key_id is not None:
        where.append(USAGE.c.key_id == query.key_id)
    if query.after is not None:
        start, value = query.after
        where.append(
            sa.or_(
                USAGE.c.bucket_start > start, sa.and_(USAGE.c.bucket_start == start, group > value)
            )
        )
    statement = (
        sa.select(USAGE.c.bucket_start, group, sa.func.sum(USAGE.c.requests))
        .where(*where)
        .group_by(USAGE.c.bucket_start, group)
        .order_by(USAGE.c.bucket_start, group)
    )
    if query.limit is not None:
        statement = statement.limit(query.limit)
    return [(int(s), str(g), int(n)) for s, g, n in conn.execute(statement)]


def top_keys(
    conn: Connection, app_slug: str, granularity: int, start: int, end: int, by: str, limit: int
) -> list[tuple[str, int, int]]:
    """``(key id, requests, refused)`` over the range, the most *by* first."""
    total = sa.func.sum(USAGE.c.requests)
    refused = sa.func.sum(sa.case((USAGE.c.outcome != "ok", USAGE.c.requests), else_=0))
    order = total if by == "requests" else refused
    statement = (
        sa.select(USAGE.c.key_id, total, refused)
        .where(
            USAGE.c.app_slug == app_slug,
            USAGE.c.granularity == granularity,
            USAGE.c.bucket_start >= start,
            USAGE.c.bucket_start < end,
            USAGE.c.key_id != "",
        )
        .group_by(USAGE.c.key_id)
        .order_by(order.desc(), USAGE.c.key_id)
        .limit(limit)
    )
    return [(str(k), int(t), int(r)) for k, t, r in conn.execute(statement)]


def prune_usage(
    conn: Connection, cutoffs: Mapping[int, int], events_before: datetime | None
) -> int:
    """Delete buckets older than their cutoff and events before *events_before* (never
    the newest one: the change feed's position lives on)."""
    deleted = 0
    for granularity, cutoff in sorted(cutoffs.items()):
        deleted += conn.execute(
            USAGE.delete().where(USAGE.c.granularity == granularity, USAGE.c.bucket_start < cutoff)
        ).rowcount
    if events_before is not None:
        newest = conn.execute(sa.select(sa.func.max(EVENTS.c.seq))).scalar()
        if newest is not None:
            deleted += conn.execute(
                EVENTS.delete().where(
                    EVENTS.c.at < sa.bindparam("before", events_before, type_=UTCDateTime()),
                    EVENTS.c.seq < newest,
                )
            ).rowcount
    return deleted
