"""SQL engines by URL: the one place a database URL picks its dialect, driver and settings,
and what differs by dialect at run time (how writers queue, how the schema is made safely)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from keysentry.errors import ConfigurationError, StoreError

__all__ = ["MYSQL_WRITER_ROW", "engine_for", "schema_lock", "serialize_writers"]


def engine_for(url: str) -> Engine:
    """The SQLAlchemy engine for a ``sqlite:``, ``postgresql:`` or ``mysql:`` URL.

    Raises:
        ConfigurationError: unparsable URL, unsupported scheme, or a missing driver.
    """
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
    if backend in ("mysql", "mariadb"):
        return _mysql_engine(parsed)
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
        "use sqlite:///path.db, postgresql://..., mysql://... or memory://"
    )


def _mysql_engine(parsed: URL) -> Engine:
    # PyMySQL: pure Python, maintained, no client library to build against
    if importlib.util.find_spec("pymysql") is None:
        raise ConfigurationError("MySQL and MariaDB need PyMySQL: pip install 'keysentry[mysql]'")
    parsed = parsed.set(drivername=f"{parsed.get_backend_name()}+pymysql")
    return sa.create_engine(
        parsed,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=5,
        pool_recycle=3600,  # before the server's wait_timeout closes an idle connection
        # a read or write that hangs is given up after 5 s, as on PostgreSQL
        connect_args={
            "connect_timeout": 5,
            "read_timeout": 5,
            "write_timeout": 5,
            "charset": "utf8mb4",
        },
    )


# pg_advisory_xact_lock key for keysentry's writers: b"keys" as an int.
_PG_WRITE_LOCK = 0x6B657973
#: The row of keysentry_meta that MySQL writers lock (SELECT … FOR UPDATE) to queue.
MYSQL_WRITER_ROW = "writer"


def serialize_writers(conn: Connection) -> None:
    """Queue this write transaction behind every other keysentry writer, until it ends:
    what makes uniqueness checks race-free and event ``seq`` numbers commit in order.
    SQLite needs nothing here (``BEGIN IMMEDIATE``)."""
    name = conn.dialect.name
    if name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_WRITE_LOCK)))
    elif name in ("mysql", "mariadb"):
        conn.execute(
            sa.text("SELECT value FROM keysentry_meta WHERE name = :row FOR UPDATE"),
            {"row": MYSQL_WRITER_ROW},
        )


@contextmanager
def schema_lock(conn: Connection) -> Iterator[None]:
    """Hold off other processes creating the schema at the same time. MySQL commits DDL at
    once (no transaction covers it), so there it is a named lock held by the connection."""
    name = conn.dialect.name
    if name not in ("mysql", "mariadb"):
        serialize_writers(conn)  # the schema is made inside the write transaction
        yield
        return
    if conn.execute(sa.text("SELECT GET_LOCK('keysentry_schema', 10)")).scalar() != 1:
        raise StoreError("another process held the schema lock for 10 s")
    try:
        yield
    finally:
        conn.execute(sa.text("SELECT RELEASE_LOCK('keysentry_schema')"))


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    # SQLAlchemy's documented recipe for real SQLite transactions: stop pysqlite from
    # issuing its own BEGIN, then emit ours, IMMEDIATE for writers.
    @sa_event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # the busy timeout before anything that may wait on another connection's lock
        cursor.execute("PRAGMA busy_timeout=5000")
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("keysentry_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
