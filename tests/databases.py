"""Test databases that are made once and emptied between tests.

Creating keysentry's tables costs a MySQL test about 0.3 s (and PostgreSQL less); emptying
them costs a few milliseconds. So a test takes a database (MySQL) or schema (PostgreSQL)
from a pool, and gives it back emptied -- but only when its tables, columns and indexes are
still exactly those keysentry makes (a test that drops a column or adds a table leaves a
database that is dropped instead) and it could be emptied. Every test still starts on a
database with no rows: either one never used, or one whose rows were all deleted and
whose event sequence starts again at 1.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import keysentry.stores.sql  # noqa: F401 - every table joins METADATA
from keysentry.stores._sql_schema import METADATA

# children before parents, so that deleting breaks no foreign key
_TABLES = [table.name for table in reversed(METADATA.sorted_tables)]
_AUTO_INCREMENTED = [(t.name, c.name) for t in METADATA.sorted_tables for c in t.columns
                     if c.autoincrement is True]  # fmt: skip


class Pool:
    """Databases of one server for one test at a time.

    *create(name)* and *drop(name)* make and remove one; *shape(name)* describes its tables
    (anything comparable); *empty(name)* deletes every row; *url(name)* is what a test gets.
    """

    def __init__(
        self,
        create: Callable[[str], object],
        drop: Callable[[str], object],
        shape: Callable[[str], Any],
        empty: Callable[[str], object],
        url: Callable[[str], str],
    ) -> None:
        self._create, self._drop, self._shape, self._empty, self._url = (
            create, drop, shape, empty, url,
        )  # fmt: skip
        self._free: list[str] = []
        self._expected: Any = None  # the shape of keysentry's tables, once measured

    @contextmanager
    def database(self) -> Iterator[str]:
        """A URL of an empty database, given back (or dropped) afterwards."""
        name = self._free.pop() if self._free else self._new()
        try:
            yield self._url(name)
        finally:
            self._give_back(name)

    def _new(self) -> str:
        name = f"ks_test_{secrets.token_hex(6)}"
        self._create(name)
        return name

    def _expected_shape(self) -> Any:
        """The shape of the tables keysentry makes, measured on a database of its own (which
        then joins the pool)."""
        if self._expected is None:
            from keysentry import KeySentry

            name = self._new()
            with KeySentry(self._url(name), usage_interval=None) as ks:
                ks.list_api_auth_apps()  # makes the tables
            self._expected = self._shape(name)
            self._free.append(name)
        return self._expected

    def _give_back(self, name: str) -> None:
        try:
            shape = self._shape(name)
            if shape:  # a test that never wrote left no tables: nothing to check or empty
                if shape != self._expected_shape():
                    raise LookupError("the test changed the tables")
                self._empty(name)
        except Exception:
            self._drop(name)
            return
        self._free.append(name)

    def close(self) -> None:
        """Drop every database in the pool."""
        while self._free:
            self._drop(self._free.pop())


def mysql_pool(connect: Callable[[str | None], Any], url: Callable[[str], str]) -> Pool:
    """A pool of MySQL/MariaDB databases (*connect(database)* opens an autocommit connection)."""

    def run(database: str | None, *statements: str, name: str | None = None) -> list[Any]:
        conn = connect(database)
        try:
            with conn.cursor() as cursor:
                # a test that left a transaction open must not hang the suite here
                cursor.execute("SET SESSION lock_wait_timeout = 5")
                cursor.execute("SET SESSION innodb_lock_wait_timeout = 5")
                rows: list[Any] = []
                for statement in statements:
                    cursor.execute(statement, None if name is None else (name,))
                    rows.extend(cursor.fetchall())
                return rows
        finally:
            conn.close()

    def shape(name: str) -> Any:
        return run(
            None,
            "SELECT table_name, column_name, column_type, is_nullable FROM "
            "information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
            "SELECT table_name, index_name, non_unique, seq_in_index, column_name FROM "
            "information_schema.statistics WHERE table_schema = %s ORDER BY 1, 2, 4",
            name=name,
        )

    def empty(name: str) -> None:
        run(
            name,
            # the names are keysentry's own tables and ks_test_<hex>: nothing to quote
            *(f"DELETE FROM `{table}`" for table in _TABLES),  # noqa: S608
            *(f"ALTER TABLE `{table}` AUTO_INCREMENT = 1" for table, _ in _AUTO_INCREMENTED),
        )

    return Pool(
        create=lambda name: run(None, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"),
        drop=lambda name: run(None, f"DROP DATABASE IF EXISTS `{name}`"),
        shape=shape,
        empty=empty,
        url=url,
    )


def postgres_pool(admin_url: str, url: Callable[[str], str]) -> Pool:
    """A pool of PostgreSQL schemas in the database of *admin_url*."""

    def run(*statements: str, name: str | None = None) -> list[Any]:
        import psycopg  # only once a test asks for PostgreSQL (it skips when it is missing)

        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '5s'")
            rows: list[Any] = []
            for statement in statements:
                cursor = conn.execute(statement, None if name is None else (name,))
                if cursor.description is not None:
                    rows.extend(cursor.fetchall())
            return rows

    def shape(name: str) -> Any:
        return run(
            "SELECT table_name, column_name, data_type, is_nullable FROM "
            "information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1, 2",
            name=name,
        )

    def empty(name: str) -> None:
        run(
            *(f'DELETE FROM "{name}"."{table}"' for table in _TABLES),  # noqa: S608
            *(f"SELECT setval(pg_get_serial_sequence('\"{name}\".\"{table}\"', '{column}'), "
              "1, false)" for table, column in _AUTO_INCREMENTED),
        )  # fmt: skip

    return Pool(
        create=lambda name: run(f'CREATE SCHEMA "{name}"'),
        drop=lambda name: run(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'),
        shape=shape,
        empty=empty,
        url=url,
    )
