"""Making and upgrading keysentry's tables: the schema version row, the upgrade from each
older version, the row MySQL writers lock."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from keysentry.errors import StoreError
from keysentry.stores._sql_engines import MYSQL_WRITER_ROW
from keysentry.stores._sql_schema import APPS, KEYS, META, METADATA, OWNER_INDEX, ROTATING_INDEX
from keysentry.stores.base import SCHEMA_VERSION

__all__ = ["prepare_schema", "upgrade_from_1"]


def prepare_schema(conn: Connection) -> None:
    """Make the tables (if missing), check or upgrade the version: inside one write
    transaction holding the schema lock (so concurrent first starts are safe)."""
    METADATA.create_all(conn, checkfirst=True)
    # a database made before these indexes existed gets them now (same schema version: they
    # change no stored data); on MySQL the schema lock is GET_LOCK, which DDL does not end
    if conn.dialect.name in ("sqlite", "postgresql"):
        ROTATING_INDEX.create(conn, checkfirst=True)
    OWNER_INDEX.create(conn, checkfirst=True)
    # a locking read: under MySQL's REPEATABLE READ a plain one reads the snapshot
    # taken before the schema lock was granted, missing another process's row
    version = conn.execute(
        sa.select(META.c.value).where(META.c.name == "schema_version").with_for_update()
    ).scalar()
    if version is None:
        conn.execute(META.insert().values(name="schema_version", value=str(SCHEMA_VERSION)))
    elif version == "1":
        upgrade_from_1(conn)
    elif version != str(SCHEMA_VERSION):
        raise StoreError(
            f"the database holds keysentry schema version {version}; "
            f"this keysentry uses version {SCHEMA_VERSION}"
        )
    writer = sa.select(META.c.name).where(META.c.name == MYSQL_WRITER_ROW).with_for_update()
    if conn.execute(writer).first() is None:  # the row MySQL writers lock
        conn.execute(META.insert().values(name=MYSQL_WRITER_ROW, value=""))


def upgrade_from_1(conn: Connection) -> None:
    """Version 1 -> 2: the apps' and keys' ``allowed_ips``, the keys' credits (all null:
    no list, unlimited)."""
    inspector = sa.inspect(conn)
    added = [(APPS, "allowed_ips"), (KEYS, "allowed_ips"), (KEYS, "credits"), (KEYS, "refill"),
             (KEYS, "credit_period"), (KEYS, "credit_generation")]  # fmt: skip
    for table, name in added:
        if name not in {c["name"] for c in inspector.get_columns(table.name)}:
            column_type = table.c[name].type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {column_type}"))
    conn.execute(META.update().where(META.c.name == "schema_version").values(value="2"))
