"""Credits on every SQL dialect: a lease reads the key's balance with ``FOR UPDATE`` (a row
lock until the lease commits on PostgreSQL and MySQL; SQLite serializes its writers anyway)
and writes it back with a conditional ``UPDATE`` (the balance, period and generation it read
still stand), so no credit is leased twice. A locking read also sees the latest balance
under MySQL's REPEATABLE READ, where a plain one would keep reading its snapshot."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from keysentry.core.credits import lease
from keysentry.stores._sql_schema import KEYS

__all__ = ["lease_credits", "return_credits", "set_credits"]

_ATTEMPTS = 20


def lease_credits(
    conn: Connection, key_id: str, generation: int, period: int, refill_amount: int | None,
    cost: int,
) -> tuple[int, int] | None:  # fmt: skip
    """See :meth:`keysentry.stores.base.KeyStore.lease_credits`."""
    columns = (KEYS.c.credits, KEYS.c.credit_period, KEYS.c.credit_generation)
    for _ in range(_ATTEMPTS):
        locked = sa.select(*columns).where(KEYS.c.id == key_id).with_for_update()
        row = conn.execute(locked).first()
        if row is None or row[0] is None or (row[2] or 0) != generation:
            return None
        stored, stored_period = int(row[0]), int(row[1] or 0)
        taken, left, new_period = lease(stored, stored_period, period, refill_amount, cost)
        if taken == 0 and new_period == stored_period:
            return 0, left
        done = conn.execute(
            KEYS.update()
            .where(KEYS.c.id == key_id, KEYS.c.credits == stored,
                   sa.func.coalesce(KEYS.c.credit_period, 0) == stored_period,
                   sa.func.coalesce(KEYS.c.credit_generation, 0) == generation)
            .values(credits=left, credit_period=new_period)
        )  # fmt: skip
        if done.rowcount == 1:
            return taken, left
    return 0, 0  # lost every race: refuse this one request rather than wait


def return_credits(conn: Connection, key_id: str, generation: int, period: int,
                   credits: int) -> None:  # fmt: skip
    """See :meth:`keysentry.stores.base.KeyStore.return_credits`."""
    conn.execute(
        KEYS.update()
        .where(KEYS.c.id == key_id, KEYS.c.credits.is_not(None),
               sa.func.coalesce(KEYS.c.credit_period, 0) == period,
               sa.func.coalesce(KEYS.c.credit_generation, 0) == generation)
        .values(credits=KEYS.c.credits + credits)
    )  # fmt: skip


def set_credits(conn: Connection, key_id: str, credits: int | None, period: int,
                generation: int) -> None:  # fmt: skip
    """See :meth:`keysentry.stores.base.StoreSession.set_credits`."""
    conn.execute(
        KEYS.update().where(KEYS.c.id == key_id)
        .values(credits=credits, credit_period=period, credit_generation=generation)
    )  # fmt: skip
