"""SQL engines by URL: the one place a database URL picks its dialect, driver and settings."""

from __future__ import annotations

import importlib.util
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from keysentry.errors import ConfigurationError

__all__ = ["engine_for"]


def engine_for(url: str) -> Engine:
    """The SQLAlchemy engine for a ``sqlite:`` or ``postgresql:`` URL.

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
