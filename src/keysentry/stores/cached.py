"""The in-process key cache in front of a store (docs/design.md §7).

Verified keys are cached as compiled :class:`~keysentry.core.decision.KeyEntry` objects by
their SHA-256 digest (never the secret); digests that matched nothing go to a short-lived
negative cache. :meth:`CachedKeyStore.get` is the hot path and does no I/O; on a miss the
driver calls :meth:`CachedKeyStore.load` (in a worker thread for async callers), which also
reads the store's event log every ``sync_interval`` and evicts what other processes changed.
This process's own changes evict before the call returns. While the store is unreachable, a
key verified within ``max_stale`` seconds keeps verifying; anything else is a
:class:`~keysentry.errors.StoreError` (503). docs/architecture.md says which rules keep it
consistent.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from cachetools import LRUCache, TTLCache

from keysentry.core.decision import KeyEntry
from keysentry.core.keys import select_candidate
from keysentry.core.pipeline import LookupKey
from keysentry.core.ratelimit import Algorithm
from keysentry.errors import StoreError
from keysentry.models import KeyRecord
from keysentry.stores.base import KeyStore, StoreSession
from keysentry.stores.notify import RedisChanges
from keysentry.verification.entries import EntryBuilder

__all__ = ["MISS", "CachedKeyStore", "EntryLoader", "StillDown"]

#: Builds a key's entry from its record, reading its app and rules in the same session.
EntryLoader = Callable[[StoreSession, KeyRecord], KeyEntry | None]

logger = logging.getLogger("keysentry")


class _Read:
    """A digest's store read and its callers: the first reads, the others wait, then find
    what it cached (or read themselves if it cached nothing: a change landed meanwhile)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.callers = 0


# the events after which a cached key entry is out of date
_KEY_CHANGES = frozenset({"key.revoked", "key.rotated", "key.credits_updated"})


class _Miss(enum.Enum):
    # an enum member, so that "entry is MISS" narrows the type for mypy
    MISS = "MISS"

    def __repr__(self) -> str:
        return "MISS"


#: Returned by :meth:`CachedKeyStore.get` when the cache does not know the digest.
MISS: Final = _Miss.MISS


class StillDown(StoreError):
    """The store failed less than ``retry_after`` ago and was not asked again (the failure
    itself was already reported)."""


class CachedKeyStore:
    """Cache verified keys in front of *store*.

    Args:
        store: where keys live.
        maxsize: how many keys to keep (least recently used go first).
        ttl: seconds a cached key is trusted before it is read again. Changes made in this
            process evict at once; changes made by other processes are seen after at most
            *ttl* seconds.
        negative_ttl: seconds an unknown digest is remembered.
        sync_interval: seconds between reads of the event log (``None``: never; then other
            processes' changes are seen only when entries expire after *ttl*).
        timer: monotonic clock for the TTLs and the sync (tests inject a fake one).
        algorithm: ``"sliding_window"`` (default) or ``"fixed_window"`` for the rules
            compiled into cached entries.
        max_stale: while the store is unreachable, how long after it was last confirmed a
            verified key may still be used (``0``: refuse at once, 503).
        retry_after: seconds to leave a failing store alone before asking it again.
        changes: Redis pub/sub for invalidations: this cache's changes are published, and
            other processes' changes evict here within milliseconds.
        entries: turns a stored key into its entry, reading what else it needs in the
            same session (default: :class:`~keysentry.verification.entries.EntryBuilder`).
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        maxsize: int = 10_000,
        ttl: float = 30.0,
        negative_ttl: float = 2.0,
        sync_interval: float | None = 1.0,
        timer: Callable[[], float] = time.monotonic,
        algorithm: Algorithm = "sliding_window",
        max_stale: float = 60.0,
        retry_after: float = 1.0,
        changes: RedisChanges | None = None,
        entries: EntryLoader | None = None,
    ) -> None:
        self.store = store
        self.changes = changes
        if changes is not None:
            changes.attach(self._apply_remote, self._sync_soon)
        self._max_stale = max_stale
        self._retry_after = retry_after
        self._down_until = 0.0  # the store failed: do not ask it again before this time
        self._synced_at = float("-inf")  # when the event log was last read successfully
        # digest -> (entry, when it was loaded): what may be served while the store is down
        self._stale: LRUCache[str, tuple[KeyEntry, float]] = LRUCache(maxsize)
        self._entries = entries or EntryBuilder(algorithm)
        self._timer = timer
        self._sync_interval = sync_interval
        # due at once (the first lookup records where the log stands), or never
        self._next_sync = float("-inf") if sync_interval is not None else float("inf")
        self._sync_from = float("-inf")  # when _next_sync was set: a clock set back is due
        self._sync_claimed_until = float("-inf")  # a caller was sent to read the log
        self._last_seq: int | None = None
        self._sync_lock = threading.Lock()
        # digest -> (entry, when it was loaded). A plain dict, not a cachetools.TTLCache: a
        # hit is one dict read and one comparison with the caller's clock reading, with no
        # lock (a dict read is atomic) and no Python-level __getitem__ and timer calls.
        self._fresh: dict[str, tuple[KeyEntry, float]] = {}
        self._maxsize = maxsize
        self._ttl = ttl
        self._negative: TTLCache[str, bool] = TTLCache(
            min(maxsize, 4096), negative_ttl, timer=timer
        )
        self._lock = threading.Lock()
        self._generation = 0
        self._digests: dict[str, set[str]] = {}  # key id -> cached digests (current, previous)
        self._keys: dict[str, set[str]] = {}  # app slug -> key ids with cached digests
        self._reads: dict[str, _Read] = {}  # digest -> its store read in progress

    def get(self, digest: str, now: float | None = None) -> KeyEntry | _Miss | None:
        """The cached entry, ``None`` if known to be unknown, or :data:`MISS`. No I/O.

        *now* is the caller's reading of :attr:`timer` (read here when not given). Answers
        :data:`MISS` when the event log is due to be read, so that :meth:`load` runs; to one
        caller at a time: the others keep being answered from the cache meanwhile (under
        load, dozens of requests would otherwise wait for the same read).
        """
        if now is None:
            now = self._timer()
        # chained comparisons: a clock set back (a wall clock may be) reads as "due" and
        # "expired", never as "fresh for longer"
        if self._sync_from <= now < self._next_sync:
            return self._cached(digest, now)
        if not self._sync_claimed_until - 1.0 <= now < self._sync_claimed_until:
            # this caller reads the log; should it never do so (a cancelled request),
            # another one is sent after a second
            self._sync_claimed_until = now + 1.0
            return MISS
        return self._cached(digest, now)  # another caller reads it: serve from the cache

    @property
    def timer(self) -> Callable[[], float]:
        """The clock of the TTLs and the sync schedule (the driver passes its readings)."""
        return self._timer

    def _sync_due(self) -> bool:
        return self._sync_interval is not None and not (
            self._sync_from <= self._timer() < self._next_sync
        )

    def fresh(self, digest: str, now: float) -> KeyEntry | None:
        """The cached entry if it may be served as it is at *now* (no event-log read is due,
        and it is within its TTL), else ``None``: then :meth:`get` decides. No side effects,
        so a caller may ask this first and :meth:`get` afterwards."""
        if self._sync_from <= now < self._next_sync:
            fresh = self._fresh.get(digest)
            if fresh is not None and 0.0 <= now - fresh[1] < self._ttl:
                return fresh[0]
        return None

    def _cached(self, digest: str, now: float) -> KeyEntry | _Miss | None:
        fresh = self._fresh.get(digest)
        if fresh is not None and 0.0 <= now - fresh[1] < self._ttl:
            return fresh[0]
        return self._known_unknown(digest)

    def _known_unknown(self, digest: str) -> _Miss | None:
        """``None`` if *digest* matched nothing a moment ago, else :data:`MISS`."""
        with self._lock:
            if digest in self._negative:
                return None
        return MISS

    def load(self, effect: LookupKey) -> KeyEntry | None:
        """Read the key from the store, check its hash, and cache the outcome.

        Raises:
            StoreError: the store failed.
        """
        if self.changes is not None:
            self.changes.ensure_running()  # in this process: never across a fork
        if self._sync_due():
            self.sync()
        read = self._join(effect.digest)
        try:
            with read.lock:  # a cold key's burst of requests reads the store once
                return self._load(effect)
        finally:
            self._leave(effect.digest, read)

    def _join(self, digest: str) -> _Read:
        """The read of *digest* this caller takes part in: the one in progress, or a new one."""
        with self._lock:
            read = self._reads.get(digest)
            if read is None:
                read = self._reads[digest] = _Read()
            read.callers += 1
        return read

    def _leave(self, digest: str, read: _Read) -> None:
        with self._lock:
            read.callers -= 1
            if not read.callers:
                del self._reads[digest]

    def _load(self, effect: LookupKey) -> KeyEntry | None:
        # the caller may have been sent only to read the log, or another caller may have
        # loaded this key meanwhile: the store is asked only for what is still missing
        started = self._timer()
        cached = self._cached(effect.digest, started)
        if not isinstance(cached, _Miss):
            return cached
        if started < self._down_until:
            return self._stale_entry(effect.digest, StillDown("the store is unreachable"))
        generation = self._generation
        try:
            entry = self._read(effect)
        except StoreError as exc:
            self._down_until = self._timer() + self._retry_after
            return self._stale_entry(effect.digest, exc)
        with self._lock:
            if generation == self._generation:  # nothing was evicted while we read
                if entry is None:
                    self._negative[effect.digest] = True
                else:
                    self._keep(effect.digest, entry, started)
                    self._stale[effect.digest] = (entry, started)
                    self._index(effect.digest, entry)
        return entry

    def _keep(self, digest: str, entry: KeyEntry, loaded_at: float) -> None:
        # Call with the lock held. Every entry lives as long, so the least recently loaded
        # is also the first to expire: it goes first when the cache is full.
        fresh = self._fresh
        fresh.pop(digest, None)  # re-inserted last
        while len(fresh) >= self._maxsize and fresh:
            del fresh[next(iter(fresh))]
        fresh[digest] = (entry, loaded_at)

    def _read(self, effect: LookupKey) -> KeyEntry | None:
        # Only ids and hashes until a hash matches: what a wrong secret makes the store
        # build, an unknown key makes it build too, so the time tells neither apart.
        digest = effect.digest
        candidates = self.store.find_candidates(effect.prefix, effect.suffix)
        index = select_candidate(digest, [(c.key_hash, c.previous_key_hash) for c in candidates])
        if index is None:
            return None
        with self.store.read() as session:
            record = session.get_key(candidates[index].key_id)
            if record is None or digest not in (record.key_hash, record.previous_key_hash):
                return None  # rotated or removed between the two reads
            return self._entries(session, record)

    def _stale_entry(self, digest: str, error: StoreError) -> KeyEntry:
        """The store failed: a verified key confirmed within ``max_stale``, else *error*."""
        with self._lock:
            kept = self._stale.get(digest)
        if kept is not None:
            entry, loaded_at = kept
            confirmed = max(loaded_at, self._synced_at)
            if self._timer() - confirmed <= self._max_stale:
                return entry
        raise error

    def _index(self, digest: str, entry: KeyEntry) -> None:
        # The caches drop entries without telling us, so the index is pruned now and then
        # by rebuilding it from every copy that can still be served: the TTL cache and the
        # outage copies, which outlive their TTL entry. An entry missing here could not be
        # evicted, and a revoked key would be served while the store is down. At most
        # 2 x maxsize digests remain indexed, so rebuilds come maxsize inserts apart.
        if len(self._digests) > 3 * self._maxsize:
            self._digests.clear()
            self._keys.clear()
            for cached_digest, (cached, _) in list(self._fresh.items()):
                self._index_one(cached_digest, cached)
            for cached_digest, (kept, _) in list(self._stale.items()):
                self._index_one(cached_digest, kept)
        self._index_one(digest, entry)

    def _index_one(self, digest: str, entry: KeyEntry) -> None:
        key_id = entry.identity.key_id
        self._digests.setdefault(key_id, set()).add(digest)
        self._keys.setdefault(entry.identity.app_slug, set()).add(key_id)

    def _drop_key(self, key_id: str) -> None:
        for digest in self._digests.pop(key_id, ()):
            self._fresh.pop(digest, None)
            self._stale.pop(digest, None)

    def evict_key(self, key_id: str, *, announce: bool = False) -> None:
        """Forget a key (under its current and previous secret); with *announce*, tell the
        other processes too (a change made here)."""
        with self._lock:
            self._generation += 1
            self._drop_key(key_id)
        if announce and self.changes is not None:
            self.changes.publish("key", key_id)

    def evict_app(self, app_slug: str, *, announce: bool = False) -> None:
        """Forget every key of the app(s) with this slug."""
        with self._lock:
            self._generation += 1
            for key_id in self._keys.pop(app_slug, ()):
                self._drop_key(key_id)
        if announce and self.changes is not None:
            self.changes.publish("app", app_slug)

    def clear(self, *, announce: bool = False) -> None:
        """Forget everything (a scheme changed: its rules are compiled into entries)."""
        with self._lock:
            self._generation += 1
            self._fresh.clear()
            self._negative.clear()
            self._stale.clear()
            self._digests.clear()
            self._keys.clear()
        if announce and self.changes is not None:
            self.changes.publish("all")

    def _apply_remote(self, kind: str, ident: str) -> None:
        if kind == "key":
            self.evict_key(ident)
        elif kind == "app":
            self.evict_app(ident)
        else:
            self.clear()

    def _sync_soon(self) -> None:
        if self._sync_interval is None:
            return
        self._next_sync = float("-inf")  # the next lookup reads the event log
        self._sync_claimed_until = float("-inf")

    def sync(self) -> None:
        """Read the event log past the last event seen and evict what changed.

        Never raises: if the store cannot be read, it is tried again after the interval, and
        what is cached stays in use until it is ``max_stale`` seconds old.
        """
        with self._sync_lock:
            if self._sync_interval is not None and not self._sync_due():
                return  # another thread synced while this one waited
            started = self._timer()
            try:
                if started < self._down_until:
                    raise StoreError("the store is unreachable")
                self._read_events()
                self._synced_at = started
            except StoreError as exc:
                if started >= self._down_until:
                    logger.warning("keysentry: reading the event log failed, will retry: %s", exc)
                    self._down_until = self._timer() + self._retry_after
                if started - self._synced_at > self._max_stale:
                    self._expire_fresh()  # too stale to trust without the store
            if self._sync_interval is not None:
                self._sync_from = self._timer()
                self._next_sync = self._sync_from + self._sync_interval

    def _expire_fresh(self) -> None:
        """Drop the TTL cache (the stale copies stay, each judged by its own age)."""
        with self._lock:
            self._generation += 1
            self._fresh.clear()

    def _read_events(self) -> None:
        with self.store.read() as session:
            if self._last_seq is None:
                # Nothing is cached from before this point, so older events do not matter.
                self._last_seq = session.last_event_seq()
                return
            events = session.events_after(self._last_seq, 1000)
            while events:
                for event in events:
                    if event.kind.startswith("scheme."):
                        self.clear()
                    elif event.kind.startswith("app.") and event.app_slug:
                        self.evict_app(event.app_slug)
                    elif event.kind in _KEY_CHANGES and event.key_id:
                        self.evict_key(event.key_id)
                self._last_seq = events[-1].seq
                events = session.events_after(self._last_seq, 1000) if len(events) == 1000 else []
