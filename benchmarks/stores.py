"""Cold path: find a key's candidates in the store (a cache miss) on SQLite, PostgreSQL and
MySQL/MariaDB.

The baseline is the same indexed SELECT issued through the raw driver (sqlite3 / psycopg /
PyMySQL),
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
MYSQL_URL = "mysql://root@127.0.0.1:3306/keysentry_bench"
_SQL = "SELECT * FROM keysentry_keys WHERE key_prefix = ? AND key_suffix = ?"


def _fill(ks: KeySentry, n: int) -> str:
    ks.create_api_auth_app(app_slug="bench", name="Bench", key_prefix="sk_bench")
    secret = ""
    for i in range(n):
        secret = ks.create_api_key("bench", f"k{i}").secret
    return secret


def _lookup(compare: Any, name: str, ks: KeySentry, raw: Any, rounds: int, number: int) -> Any:
    """find_keys through keysentry vs *raw*(prefix, suffix) through the bare driver."""
    parsed = parse_key(_fill(ks, 300))
    return compare(
        f"cold lookup, {name} (300 keys)",
        (
            "store.find_keys(prefix, suffix)",
            lambda: ks.store.find_keys(parsed.prefix, parsed.suffix),
        ),
        (f"{raw.__doc__} by (prefix, suffix)", lambda: raw(parsed.prefix, parsed.suffix)),
        number=number,
        rounds=rounds,
    )


def _mysql(compare: Any, rounds: int) -> Any:
    try:
        import pymysql

        my = pymysql.connect(host="127.0.0.1", user="root", connect_timeout=2, autocommit=True)
    except Exception as exc:  # any failure means: skip this scenario
        print(f"(MySQL scenario skipped: {exc})")
        return None
    my.cursor().execute("DROP DATABASE IF EXISTS keysentry_bench")
    my.cursor().execute("CREATE DATABASE keysentry_bench CHARACTER SET utf8mb4")
    try:
        ks = KeySentry(MYSQL_URL)
        my.select_db("keysentry_bench")
        cursor = my.cursor()
        my_sql = _SQL.replace("?", "%s")

        def pymysql_select(prefix: str, suffix: str) -> object:
            """PyMySQL SELECT"""
            cursor.execute(my_sql, (prefix, suffix))
            return cursor.fetchall()

        result = _lookup(compare, "MySQL/MariaDB", ks, pymysql_select, rounds, 300)
        ks.close()
        return result
    finally:
        my.cursor().execute("DROP DATABASE IF EXISTS keysentry_bench")
        my.close()


def scenarios(compare: Any, rounds: int) -> list[Any]:
    """Cold lookups on every store that is reachable, each beside its bare driver."""
    results = _sqlite_and_postgres(compare, rounds)
    mysql = _mysql(compare, rounds)
    return results if mysql is None else [*results, mysql]


def _sqlite_and_postgres(compare: Any, rounds: int) -> list[Any]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        ks = KeySentry(f"sqlite:///{path}")
        conn = sqlite3.connect(path)

        def sqlite_select(prefix: str, suffix: str) -> object:
            """sqlite3 SELECT"""
            return conn.execute(_SQL, (prefix, suffix)).fetchall()

        results.append(_lookup(compare, "SQLite", ks, sqlite_select, rounds, 500))
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
        pg.execute(f"SET search_path = {schema}")
        pg_sql = _SQL.replace("?", "%s")

        def psycopg_select(prefix: str, suffix: str) -> object:
            """psycopg SELECT"""
            return pg.execute(pg_sql, (prefix, suffix)).fetchall()  # type: ignore[arg-type]

        results.append(_lookup(compare, "PostgreSQL", ks, psycopg_select, rounds, 300))
        ks.close()
    finally:
        pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        pg.close()
    return results
