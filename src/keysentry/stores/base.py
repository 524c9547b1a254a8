"""The ``KeyStore`` port: where apps, schemes, keys and the event log live.

A store hands out *sessions*. :meth:`KeyStore.read` gives a consistent snapshot;
:meth:`KeyStore.write` gives one transaction that is serialized against every other writer,
in this process and in others (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock, a lock
in memory). The service reads, validates and writes inside one write session, so checks such
as "the slug is free" or "the scheme is unused" cannot race, a failed call writes nothing, and
event sequence numbers commit in order, which the change feed relies on.

Sessions hold no business rules: they load and save validated models. Rules live once, in
:mod:`keysentry.service`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from keysentry.models import (
    ApiAuthApp,
    Event,
    EventKind,
    KeyRecord,
    RateLimitRule,
    RateLimitScheme,
    effective_scheme_slug,
)
from keysentry.usage import BucketCounts, UsageQuery

__all__ = ["SCHEMA_VERSION", "Candidate", "KeyStore", "StoreSession", "Ticket", "key_rules"]

#: Version of the stored layout; a store upgrades a database of an older version it knows
#: (1 -> 2: apps' and keys' ``allowed_ips``) and refuses any other.
SCHEMA_VERSION = 2


class Candidate(NamedTuple):
    """What a cache miss reads first: a key whose ``(prefix, suffix)`` matched, as little of
    it as the hash comparison needs. The whole record is read only when a hash matched, so
    an unknown key and a wrong secret for a real prefix and suffix cost the same."""

    key_id: str
    key_hash: str
    previous_key_hash: str | None


class StoreSession(Protocol):
    """Reads and writes inside one transaction. Obtained from :class:`KeyStore`."""

    # apps ----------------------------------------------------------------------------
    def get_app(self, app_slug: str) -> ApiAuthApp | None:
        """The live (not deleted) app with this slug."""

    def get_app_by_id(self, app_id: str) -> ApiAuthApp | None:
        """The app with this id, deleted or not."""

    def list_apps(self) -> list[ApiAuthApp]:
        """Live apps, oldest first."""

    def add_app(self, app: ApiAuthApp) -> None:
        """Insert a new app."""

    def save_app(self, app: ApiAuthApp) -> None:
        """Replace the app with the same id."""

    # schemes -------------------------------------------------------------------------
    def get_scheme(self, slug: str) -> RateLimitScheme | None:
        """The scheme with this slug."""

    def list_schemes(self) -> list[RateLimitScheme]:
        """All schemes, oldest first."""

    def add_scheme(self, scheme: RateLimitScheme) -> None:
        """Insert a new scheme."""

    def save_scheme(self, scheme: RateLimitScheme) -> None:
        """Replace the scheme with the same slug."""

    def remove_scheme(self, slug: str) -> None:
        """Delete the scheme (schemes are not soft-deleted)."""

    def scheme_users(self, slug: str) -> list[str]:
        """Live apps and unrevoked keys of live apps that name this scheme, for messages:
        ``["app 'billing'", "key 'key_…'"]``."""

    def set_credits(self, key_id: str, credits: int | None, period: int, generation: int) -> None:
        """Write the key's balance, its period and generation (nothing else of the key)."""

    def forget_usage(self, app_slug: str) -> None:
        """Delete the usage buckets counted under this slug (its app was deleted, or a new
        app takes the slug and starts with none)."""

    # keys ----------------------------------------------------------------------------
    def get_key(self, key_id: str) -> KeyRecord | None:
        """The key with this id."""

    def list_keys(self, app_id: str, owner_user_id: str | None = None) -> list[KeyRecord]:
        """Every key of the app (revoked ones too), oldest first; only *owner_user_id*'s
        when it is given."""

    def add_key(self, record: KeyRecord) -> None:
        """Insert a new key."""

    def save_key(self, record: KeyRecord) -> None:
        """Replace the key with the same id."""

    # events --------------------------------------------------------------------------
    def append_event(
        self,
        kind: EventKind,
        at: datetime,
        *,
        app_slug: str | None = None,
        key_id: str | None = None,
        scheme_slug: str | None = None,
    ) -> Event:
        """Append to the event log; the store assigns ``seq``."""

    def events_after(self, seq: int, limit: int = 1000) -> list[Event]:
        """Events with ``seq`` greater than *seq*, in order, at most *limit*."""

    def last_event_seq(self) -> int:
        """The highest ``seq`` in the log, 0 when it is empty."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """A portal session's link as stored: the token's SHA-256, never the token itself.

    ``permissions`` are what keys made in the session may hold (``None``: the app's own).
    """

    id: str
    token_hash: str
    app_slug: str
    owner_user_id: str
    permissions: tuple[str, ...] | None
    return_url: str | None
    created_at: datetime
    expires_at: datetime


class KeyStore(Protocol):
    """Storage for apps, schemes, keys and events. See the module docstring."""

    def read(self) -> AbstractContextManager[StoreSession]:
        """A read-only session."""

    def write(self) -> AbstractContextManager[StoreSession]:
        """A serialized read-write transaction, committed when the block exits cleanly."""

    def find_keys(self, key_prefix: str, key_suffix: str) -> list[KeyRecord]:
        """Candidates for a presented key: keys whose current ``(key_prefix, key_suffix)``
        match, or whose previous secret (kept during a rotation grace period) does. The
        caller compares hashes; the store never sees a secret."""

    def find_candidates(self, key_prefix: str, key_suffix: str) -> list[Candidate]:
        """:meth:`find_keys`, but only the id and the hashes of each key."""

    def record_usage(self, used: Mapping[str, datetime]) -> None:
        """Set each key's ``last_used_at`` to the given time unless it already holds a
        later one. Not an event: caches need not hear of it. Keys that no longer exist
        are skipped. Writes of whole records (:meth:`StoreSession.save_key`) leave
        ``last_used_at`` alone, so a revocation never undoes a usage write."""

    def add_usage(self, buckets: BucketCounts) -> None:
        """Add each bucket's count to what is stored for it (creating it at 0), in one
        transaction: several processes adding to the same bucket sum up."""

    def read_usage(self, query: UsageQuery) -> list[tuple[int, str, int]]:
        """``(bucket start, group, count)`` for the query's range, ordered by start, then
        group (the outcome, or the key id with ``""`` for no key), summed per group."""

    def top_keys(
        self, app_slug: str, granularity: int, start: int, end: int, by: str, limit: int
    ) -> list[tuple[str, int, int]]:
        """``(key id, requests, refused)`` of the app's keys over the range, the most
        *by* (``"requests"`` or ``"refused"``) first, at most *limit*."""

    def prune_usage(self, cutoffs: Mapping[int, int], events_before: datetime | None) -> int:
        """Delete buckets of each granularity that start before its cutoff, and events
        before *events_before* (never the newest event); return how many rows went."""

    def lease_credits(
        self, key_id: str, generation: int, period: int, refill_amount: int | None, cost: int
    ) -> tuple[int, int] | None:
        """Take a lease of the key's credits: ``(taken, left in the store)``. First, when
        *period* is later than the stored balance's and *refill_amount* is given, the balance
        is set to it (the refill). *taken* is :func:`keysentry.core.credits.lease_size` of
        the balance (0 when it cannot pay *cost*). ``None``: the key's credits changed since
        its entry was cached (another *generation*, or no credit limit any more). Atomic
        across processes: no credit is leased twice."""

    def return_credits(self, key_id: str, generation: int, period: int, credits: int) -> None:
        """Give back unspent leased credits, unless the balance was set or refilled since."""

    def add_ticket(self, ticket: Ticket) -> None:
        """Store a portal link (and forget links that expired a day ago or more)."""

    def use_ticket(self, token_hash: str, now: datetime) -> Ticket | None:
        """Spend the link with this token hash: the ticket the first time, before it
        expires; ``None`` for an unknown, expired or already used one. Atomic across
        processes: of two concurrent uses, one gets the ticket."""

    def ticket_in_force(self, ticket_id: str) -> bool:
        """Whether the link with this id is still stored: a portal session started from it
        lasts while it is (a spent link is kept a day past its expiry, longer than any
        session it started; :meth:`end_tickets` forgets it sooner)."""

    def end_tickets(self, app_slug: str, owner_user_id: str) -> int:
        """Forget every link of this owner of this app, spent or not: the portal sessions
        they started end, and the unspent ones open nothing. How many were forgotten."""

    def shared_secret(self, name: str) -> str:
        """A random value kept under *name*, made on first use; every process on this
        store reads the same one (the web pages sign their cookies with it)."""

    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""


def key_rules(
    session: StoreSession, record: KeyRecord
) -> tuple[ApiAuthApp | None, list[RateLimitRule]]:
    """The key's app (deleted or not) and the rules that apply to the key."""
    app = session.get_app_by_id(record.app_id)
    slug = effective_scheme_slug(record, app)
    scheme = session.get_scheme(slug) if slug else None
    return app, list(scheme.rules) if scheme else []
