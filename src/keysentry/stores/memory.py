"""``memory://``: a store in this process's memory, for tests and demos.

Records are frozen pydantic models, so sessions can hand them out without copying. A write
session works on copies of the tables and swaps them in only when the block exits cleanly, so
a failed call leaves nothing behind, exactly like a rolled-back SQL transaction.
"""

from __future__ import annotations

import bisect
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from keysentry.core.credits import lease
from keysentry.models import ApiAuthApp, Event, EventKind, KeyRecord, RateLimitScheme
from keysentry.stores.base import Candidate, Ticket
from keysentry.usage import BucketCounts, UsageQuery

__all__ = ["MemoryKeyStore"]


@dataclass
class _Tables:
    apps: dict[str, ApiAuthApp] = field(default_factory=dict)  # by id
    schemes: dict[str, RateLimitScheme] = field(default_factory=dict)  # by slug
    keys: dict[str, KeyRecord] = field(default_factory=dict)  # by id
    events: list[Event] = field(default_factory=list)
    usage: dict[tuple[str, int, int, str, str], int] = field(default_factory=dict)
    tickets: dict[str, tuple[Ticket, datetime | None]] = field(default_factory=dict)  # by hash
    shared: dict[str, str] = field(default_factory=dict)  # shared secrets by name

    def copy(self) -> _Tables:
        return replace(
            self,
            apps=dict(self.apps),
            schemes=dict(self.schemes),
            keys=dict(self.keys),
            events=list(self.events),
            usage=dict(self.usage),
            tickets=dict(self.tickets),
            shared=dict(self.shared),
        )


class _Session:
    def __init__(self, tables: _Tables) -> None:
        self._t = tables

    def get_app(self, app_slug: str) -> ApiAuthApp | None:
        for app in self._t.apps.values():
            if app.app_slug == app_slug and app.deleted_at is None:
                return app
        return None

    def get_app_by_id(self, app_id: str) -> ApiAuthApp | None:
        return self._t.apps.get(app_id)

    def list_apps(self) -> list[ApiAuthApp]:
        return [a for a in self._t.apps.values() if a.deleted_at is None]

    def add_app(self, app: ApiAuthApp) -> None:
        self._t.apps[app.id] = app

    def save_app(self, app: ApiAuthApp) -> None:
        self._t.apps[app.id] = app

    def get_scheme(self, slug: str) -> RateLimitScheme | None:
        return self._t.schemes.get(slug)

    def list_schemes(self) -> list[RateLimitScheme]:
        return list(self._t.schemes.values())

    def add_scheme(self, scheme: RateLimitScheme) -> None:
        self._t.schemes[scheme.slug] = scheme

    def save_scheme(self, scheme: RateLimitScheme) -> None:
        self._t.schemes[scheme.slug] = scheme

    def remove_scheme(self, slug: str) -> None:
        self._t.schemes.pop(slug, None)

    def set_credits(self, key_id: str, credits: int | None, period: int, generation: int) -> None:
        record = self._t.keys[key_id]
        update = {"credits": credits, "credit_period": period, "credit_generation": generation}
        self._t.keys[key_id] = record.model_copy(update=update)

    def forget_usage(self, app_slug: str) -> None:
        usage = self._t.usage
        for row in [row for row in usage if row[0] == app_slug]:
            del usage[row]

    def scheme_users(self, slug: str) -> list[str]:
        live = {a.id for a in self.list_apps()}
        users = [
            f"app {a.app_slug!r}" for a in self.list_apps() if a.rate_limit_scheme_slug == slug
        ]
        users += [
            f"key {k.id!r}"
            for k in self._t.keys.values()
            if k.rate_limit_scheme_slug == slug and k.revoked_at is None and k.app_id in live
        ]
        return users

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self._t.keys.get(key_id)

    def list_keys(self, app_id: str, owner_user_id: str | None = None) -> list[KeyRecord]:
        keys = [k for k in self._t.keys.values() if k.app_id == app_id
                and (owner_user_id is None or k.owner_user_id == owner_user_id)]  # fmt: skip
        return sorted(keys, key=lambda k: (k.created_at, k.id))  # as the SQL store orders them

    def add_key(self, record: KeyRecord) -> None:
        self._t.keys[record.id] = record

    def save_key(self, record: KeyRecord) -> None:
        old = self._t.keys.get(record.id)
        if old is not None:  # as the SQL store: a whole-record save keeps these
            kept = {"last_used_at": old.last_used_at, "credits": old.credits,
                    "credit_period": old.credit_period,
                    "credit_generation": old.credit_generation}  # fmt: skip
            record = record.model_copy(update=kept)
        self._t.keys[record.id] = record

    def append_event(
        self,
        kind: EventKind,
        at: datetime,
        *,
        app_slug: str | None = None,
        key_id: str | None = None,
        scheme_slug: str | None = None,
    ) -> Event:
        event = Event(
            seq=self.last_event_seq() + 1,
            at=at,
            kind=kind,
            app_slug=app_slug,
            key_id=key_id,
            scheme_slug=scheme_slug,
        )
        self._t.events.append(event)
        return event

    def events_after(self, seq: int, limit: int = 1000) -> list[Event]:
        events = self._t.events  # in seq order; pruning may have removed the oldest
        start = bisect.bisect_right(events, seq, key=lambda e: e.seq)
        return events[start : start + limit]

    def last_event_seq(self) -> int:
        events = self._t.events
        return events[-1].seq if events else 0  # pruning always keeps the newest


class MemoryKeyStore:
    """A :class:`~keysentry.stores.base.KeyStore` in memory; thread-safe, not persistent."""

    def __init__(self) -> None:
        self._tables = _Tables()
        self._lock = threading.RLock()

    @contextmanager
    def read(self) -> Iterator[_Session]:
        """A session over the current tables."""
        with self._lock:
            yield _Session(self._tables)

    @contextmanager
    def write(self) -> Iterator[_Session]:
        """A serialized transaction over copies of the tables, swapped in on success."""
        with self._lock:
            draft = self._tables.copy()
            yield _Session(draft)
            self._tables = draft

    def find_keys(self, key_prefix: str, key_suffix: str) -> list[KeyRecord]:
        """Keys whose current or grace-period suffix matches."""
        with self._lock:
            return [
                k
                for k in self._tables.keys.values()
                if k.key_prefix == key_prefix
                and key_suffix in (k.key_suffix, k.previous_key_suffix)
            ]

    def find_candidates(self, key_prefix: str, key_suffix: str) -> list[Candidate]:
        """The id and hashes of the keys :meth:`find_keys` would return."""
        return [
            Candidate(k.id, k.key_hash, k.previous_key_hash)
            for k in self.find_keys(key_prefix, key_suffix)
        ]

    def record_usage(self, used: Mapping[str, datetime]) -> None:
        """Move each key's ``last_used_at`` forward to the given time."""
        with self._lock:
            keys = self._tables.keys
            for key_id, at in used.items():
                record = keys.get(key_id)
                if record is not None and (record.last_used_at is None or record.last_used_at < at):
                    keys[key_id] = record.model_copy(update={"last_used_at": at})

    def add_usage(self, buckets: BucketCounts) -> None:
        """Add to the usage buckets."""
        with self._lock:
            usage = self._tables.usage
            for (app, key, outcome, granularity, start), n in buckets.items():
                row = (app, granularity, start, key, outcome)
                usage[row] = usage.get(row, 0) + n

    def read_usage(self, query: UsageQuery) -> list[tuple[int, str, int]]:
        """The query's points, summed per bucket and group."""
        points: dict[tuple[int, str], int] = {}
        with self._lock:
            for (app, granularity, start, key, outcome), n in self._tables.usage.items():
                if (
                    app != query.app_slug
                    or granularity != query.granularity
                    or not query.start <= start < query.end
                    or (query.key_id is not None and key != query.key_id)
                ):
                    continue
                point = (start, outcome if query.group_by == "outcome" else key)
                if query.after is None or point > query.after:
                    points[point] = points.get(point, 0) + n
        ordered = sorted(points.items())[: query.limit]
        return [(start, group, n) for (start, group), n in ordered]

    def top_keys(
        self, app_slug: str, granularity: int, start: int, end: int, by: str, limit: int
    ) -> list[tuple[str, int, int]]:
        """The app's keys with the most requests (or refusals) over the range."""
        totals: dict[str, list[int]] = {}
        with self._lock:
            for (app, g, s, key, outcome), n in self._tables.usage.items():
                if app == app_slug and g == granularity and start <= s < end and key:
                    total = totals.setdefault(key, [0, 0])
                    total[0] += n
                    total[1] += 0 if outcome == "ok" else n
        column = 0 if by == "requests" else 1
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1][column], kv[0]))[:limit]
        return [(key, t[0], t[1]) for key, t in ranked]

    def lease_credits(
        self, key_id: str, generation: int, period: int, refill_amount: int | None, cost: int
    ) -> tuple[int, int] | None:
        """Lease credits (under the store's lock)."""
        with self._lock:
            record = self._tables.keys.get(key_id)
            if record is None or record.credits is None:
                return None
            if (record.credit_generation or 0) != generation:
                return None
            taken, left, new_period = lease(
                record.credits, record.credit_period or 0, period, refill_amount, cost
            )
            update = {"credits": left, "credit_period": new_period}
            self._tables.keys[key_id] = record.model_copy(update=update)
            return taken, left

    def return_credits(self, key_id: str, generation: int, period: int, credits: int) -> None:
        """Give back unspent leased credits."""
        with self._lock:
            record = self._tables.keys.get(key_id)
            if (
                record is not None and record.credits is not None
                and (record.credit_generation or 0) == generation
                and (record.credit_period or 0) == period
            ):  # fmt: skip
                update = {"credits": record.credits + credits}
                self._tables.keys[key_id] = record.model_copy(update=update)

    def add_ticket(self, ticket: Ticket) -> None:
        """Store a portal link; forget those that expired a day ago."""
        with self._lock:
            tickets = self._tables.tickets
            for token_hash, (old, _) in list(tickets.items()):
                if old.expires_at < ticket.created_at - timedelta(days=1):
                    del tickets[token_hash]
            tickets[ticket.token_hash] = (ticket, None)

    def use_ticket(self, token_hash: str, now: datetime) -> Ticket | None:
        """Spend a portal link: the ticket the first time, before it expires."""
        with self._lock:
            stored = self._tables.tickets.get(token_hash)
            if stored is None or stored[1] is not None or stored[0].expires_at <= now:
                return None
            self._tables.tickets[token_hash] = (stored[0], now)
            return stored[0]

    def ticket_in_force(self, ticket_id: str) -> bool:
        """Whether the link with this id is still stored."""
        with self._lock:
            return any(t.id == ticket_id for t, _ in self._tables.tickets.values())

    def end_tickets(self, app_slug: str, owner_user_id: str) -> int:
        """Forget the owner's links of the app."""
        with self._lock:
            tickets = self._tables.tickets
            ended = [h for h, (t, _) in tickets.items()
                     if t.app_slug == app_slug and t.owner_user_id == owner_user_id]  # fmt: skip
            for token_hash in ended:
                del tickets[token_hash]
            return len(ended)

    def shared_secret(self, name: str) -> str:
        """The secret under *name*, made on first use."""
        with self._lock:
            return self._tables.shared.setdefault(name, secrets.token_urlsafe(32))

    def prune_usage(self, cutoffs: Mapping[int, int], events_before: datetime | None) -> int:
        """Delete buckets and events past their retention."""
        with self._lock:
            tables = self._tables
            old = [r for r in tables.usage if r[1] in cutoffs and r[2] < cutoffs[r[1]]]
            for row in old:
                del tables.usage[row]
            gone = len(old)
            if events_before is not None and tables.events:
                keep = [e for e in tables.events[:-1] if e.at >= events_before]
                gone += len(tables.events) - 1 - len(keep)
                tables.events = [*keep, tables.events[-1]]
            return gone

    def close(self) -> None:
        """Nothing to release."""
