"""The portal links' table and the shared secrets kept in ``keysentry_meta``, on every SQL
dialect.

A link is spent by one conditional ``UPDATE`` (unused and unexpired): whichever process's
statement matches the row first gets it, the others match nothing.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from keysentry.stores._sql_schema import _MYSQL, ID, IDENT, META, METADATA, SLUG, UTCDateTime
from keysentry.stores.base import Ticket

__all__ = [
    "TICKETS",
    "add_ticket",
    "end_tickets",
    "read_secret",
    "ticket_in_force",
    "use_ticket",
    "write_secret",
]

TICKETS = sa.Table(
    "keysentry_portal_tickets",
    METADATA,
    sa.Column("id", ID, primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("app_slug", SLUG, nullable=False),
    sa.Column("owner_user_id", IDENT, nullable=False),
    sa.Column("permissions", sa.JSON),  # null: the app's own
    sa.Column("return_url", sa.Text),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("used_at", UTCDateTime()),
    sa.Index("keysentry_portal_tickets_age", "expires_at"),
    **_MYSQL,
)
#: How long a spent or expired link is kept before a new link's write deletes it: no shorter
#: than the longest portal session (a day), which lasts while its link is kept.
KEPT = timedelta(days=1)


def add_ticket(conn: Connection, ticket: Ticket) -> None:
    """Insert *ticket*; delete the links that expired :data:`KEPT` ago."""
    expired = sa.bindparam("before", ticket.created_at - KEPT, type_=UTCDateTime())
    conn.execute(TICKETS.delete().where(TICKETS.c.expires_at < expired))
    conn.execute(
        TICKETS.insert().values(
            id=ticket.id,
            token_hash=ticket.token_hash,
            app_slug=ticket.app_slug,
            owner_user_id=ticket.owner_user_id,
            permissions=None if ticket.permissions is None else list(ticket.permissions),
            return_url=ticket.return_url,
            created_at=ticket.created_at,
            expires_at=ticket.expires_at,
        )
    )


def use_ticket(conn: Connection, token_hash: str, now: datetime) -> Ticket | None:
    """Mark the link used if it is unused and unexpired; the ticket, or ``None``."""
    at = sa.bindparam("now", now, type_=UTCDateTime())
    spent = conn.execute(
        TICKETS.update()
        .where(TICKETS.c.token_hash == token_hash, TICKETS.c.used_at.is_(None),
               TICKETS.c.expires_at > at)
        .values(used_at=now)
    )  # fmt: skip
    if spent.rowcount != 1:
        return None
    row = conn.execute(sa.select(TICKETS).where(TICKETS.c.token_hash == token_hash)).one()
    return _ticket(row)


def ticket_in_force(conn: Connection, ticket_id: str) -> bool:
    """Whether the link with this id is still stored."""
    found = conn.execute(sa.select(TICKETS.c.id).where(TICKETS.c.id == ticket_id)).first()
    return found is not None


def end_tickets(conn: Connection, app_slug: str, owner_user_id: str) -> int:
    """Delete the owner's links of the app; how many there were."""
    ended = conn.execute(
        TICKETS.delete().where(
            TICKETS.c.app_slug == app_slug, TICKETS.c.owner_user_id == owner_user_id
        )
    )
    return int(ended.rowcount)


def _ticket(row: Row[tuple[object, ...]]) -> Ticket:
    m = row._mapping
    permissions = m["permissions"]
    return Ticket(
        id=m["id"],
        token_hash=m["token_hash"],
        app_slug=m["app_slug"],
        owner_user_id=m["owner_user_id"],
        permissions=None if permissions is None else tuple(permissions),
        return_url=m["return_url"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
    )


def read_secret(conn: Connection, name: str) -> str | None:
    """The secret stored under *name*, if any."""
    value = conn.execute(sa.select(META.c.value).where(META.c.name == "secret:" + name))
    return value.scalar()


def write_secret(conn: Connection, name: str) -> str:
    """Store a new random secret under *name* (a clash raises IntegrityError)."""
    value = secrets.token_urlsafe(32)
    conn.execute(META.insert().values(name="secret:" + name, value=value))
    return value
