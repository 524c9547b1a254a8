"""Cold path: find a key's candidates in the store (a cache miss) on SQLite and PostgreSQL.

The baseline is the same indexed SELECT issued through the raw driver (sqlite3 / psycopg),
so the ratio shows what SQLAlchemy Core, the session and pydantic validation add.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from keysentry import KeySentry
from keysentry.core.keys import parse_key

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
_SQL = "SELECT * FROM keysentry_keys WHERE key_prefix = ? AND key_suffix = ?"


def _fill(ks: KeySentry, n: int) -> str:
    ks.create_api_auth_app(app_slug="bench", name="Bench", key_prefix="sk_bench")
    secret = ""
    for i in range(n):
        secret = ks.create_api_key("bench", f"k{i}").secret
    return secret


def scenarios(compare: Any, rounds: int) -> list[Any]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        ks = KeySentry(f"sqlite:///{path}")
        parsed = parse_key(_fill(ks, 300))
        conn = sqlite3.connect(path)
        results.append(
            compare(
                "cold lookup, SQLite (300 keys)",
                (
                    "store.find_keys(prefix, suffix)",
                    lambda: ks.store.find_keys(parsed.prefix, parsed.suffix),
                ),
                (
                    "sqlite3 SELECT by (prefix, suffix)",
                    lambda: conn.execute(_SQL, (parsed.prefix, parsed.suffix)).fetchall(),
                ),
                number=500,
                rounds=rounds,
            )
        )
        conn.close()
        ks.close()
    try:
        import psycopg

        pg = psycopg.connect(PG_URL, connect_timeout=2, autocommit=True)
    except Exception as exc:  # any failure means: skip this scenario
        print(f"(PostgreSQL scenario skipped: {exc})")
        return results
    schema = "keysentry_bench"
    pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    pg.execute(f"CREATE SCHEMA {schema}")
    try:
        ks = KeySentry(f"{PG_URL}?options=-csearch_path%3D{schema}")
        parsed = parse_key(_fill(ks, 300))
        pg.execute(f"SET search_path = {schema}")
        pg_sql = _SQL.replace("?", "%s")
        results.append(
            compare(
                "cold lookup, PostgreSQL (300 keys)",
                (
                    "store.find_keys(prefix, suffix)",
                    lambda: ks.store.find_keys(parsed.prefix, parsed.suffix),
                ),
                (
                    "psycopg SELECT by (prefix, suffix)",
                    lambda: pg.execute(pg_sql, (parsed.prefix, parsed.suffix)).fetchall(),
                ),
                number=300,
                rounds=rounds,
            )
        )
        ks.close()
    finally:
        pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        pg.close()
    return results
