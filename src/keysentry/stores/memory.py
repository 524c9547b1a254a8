"""``memory://``: a store in this process's memory, for tests and demos.

Records are frozen pydantic models, so sessions can hand them out without copying. A write
session works on copies of the tables and swaps them in only when the block exits cleanly, so
a failed call leaves nothing behind, exactly like a rolled-back SQL transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

from keysentry.models import ApiAuthApp, Event, EventKind, KeyRecord, RateLimitScheme
from keysentry.stores.base import Candidate

__all__ = ["MemoryKeyStore"]


@dataclass
class _Tables:
    apps: dict[str, ApiAuthApp] = field(default_factory=dict)  # by id
    schemes: dict[str, RateLimitScheme] = field(default_factory=dict)  # by slug
    keys: dict[str, KeyRecord] = field(default_factory=dict)  # by id
    events: list[Event] = field(default_factory=list)

    def copy(self) -> _Tables:
        return replace(
            self,
            apps=dict(self.apps),
            schemes=dict(self.schemes),
            keys=dict(self.keys),
            events=list(self.events),
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

    def list_keys(self, app_id: str) -> list[KeyRecord]:
        return [k for k in self._t.keys.values() if k.app_id == app_id]

    def add_key(self, record: KeyRecord) -> None:
        self._t.keys[record.id] = record

    def save_key(self, record: KeyRecord) -> None:
        old = self._t.keys.get(record.id)
        if old is not None and old.last_used_at != record.last_used_at:
            record = record.model_copy(update={"last_used_at": old.last_used_at})
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
            seq=len(self._t.events) + 1,
            at=at,
            kind=kind,
            app_slug=app_slug,
            key_id=key_id,
            scheme_slug=scheme_slug,
        )
        self._t.events.append(event)
        return event

    def events_after(self, seq: int, limit: int = 1000) -> list[Event]:
        # seq n sits at index n - 1
        return self._t.events[max(seq, 0) : max(seq, 0) + limit]

    def last_event_seq(self) -> int:
        return len(self._t.events)


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

    def close(self) -> None:
        """Nothing to release."""
