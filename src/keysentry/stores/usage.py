"""Usage, written behind: each verification is counted in memory (by app, key, outcome and
minute) and each used key's ``last_used_at`` noted; a background thread writes what
accumulated every ``interval`` seconds (docs/design.md §7), one batched statement for the
times and one for the counts (increments merged by the database, so every worker on every
machine adds to the same buckets), never a write per request. The same thread prunes old
buckets and events (:class:`~keysentry.usage.Retention`) at start and then hourly.

What is pending is also written when the :class:`~keysentry.KeySentry` closes (application
shutdown), when the interpreter exits, and on SIGTERM under a server that leaves SIGTERM at
its default (werkzeug's development server, waitress): see :func:`install_stop_handler`.
A store that cannot be reached keeps what is pending for the next attempt: usage is only
ever late, never lost while the process lives, and never moves backwards (the store keeps
the later of two times). A hard kill loses at most one interval. Memory is bounded: at most
*max_pending* distinct (app, key, outcome, minute) counts wait; beyond that new ones are
dropped and counted in :attr:`UsageRecorder.dropped`. An admitted request, the usual one, is
counted by appending its time to its key's list of the minute, without a lock
(:attr:`UsageRecorder.admitted`); a list holds at most :data:`ADMITTED_MAX` times.

Fork-safe: the writer thread is started by the first use in each process; a child made by
``fork`` starts its own and does not write what its parent had noted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from keysentry.core.decision import Identity, Reason
from keysentry.errors import StoreError
from keysentry.stores._usage_exit import install_stop_handler, live
from keysentry.stores.base import KeyStore
from keysentry.usage import Retention, rollup

__all__ = ["ADMITTED_MAX", "Admitted", "UsageRecorder", "install_stop_handler"]

logger = logging.getLogger("keysentry")
_NEVER: Final = float("-inf")
# a key is "used" when its secret matched and it was usable: the request may still be
# refused for a permission, a resource or a rate limit
_USED: Final = frozenset({Reason.OK, Reason.PERMISSION_DENIED, Reason.RESOURCE_DENIED})
_OK: Final = Reason.OK
#: Seconds between prunes of old buckets and events.
PRUNE_INTERVAL: Final = 3600.0
_Count = tuple[str, str, str, int]  # (app slug or "?" + key prefix, key id or "", outcome, minute)
# A count waiting in memory: its minute as floor division left it (a float, equal and
# hashing equal to the int it is written as; int() on every request costs as much again)
_Pending = tuple[str, str, str, float]
#: The most admission times one key's list holds before :meth:`UsageRecorder.note` folds them
#: into a count (bounds the memory a busy key takes between two writes).
ADMITTED_MAX: Final = 256
#: Seconds a replaced list is still folded at each write, for a late append to it.
RETIRED_SECONDS: Final = 60.0
Admitted = tuple[float, float, list[float], _Pending]
"""A key's admitted requests of one minute: the minute's start and end (Unix seconds), the
times of the requests not yet counted, and the count they add to."""


class UsageRecorder:
    """Count verifications and collect "key *k* was used at *t*"; write both to *store* in
    batches.

    Args:
        store: where counts and ``last_used_at`` are written (:meth:`KeyStore.add_usage`,
            :meth:`KeyStore.record_usage`).
        interval: seconds between writes; ``None`` writes only on :meth:`flush` and
            :meth:`close` (and then nothing is pruned by itself: call :meth:`prune`).
        analytics: count verifications (``False``: only ``last_used_at``).
        retention: how long buckets and events are kept.
        max_pending: the most distinct counts kept between two writes.
        clock: the current Unix time, for pruning (the verifier's clock).
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        interval: float | None = 10.0,
        analytics: bool = True,
        retention: Retention | None = None,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.interval = interval
        self.analytics = analytics
        self.retention = retention or Retention()
        self.max_pending = max_pending
        self._clock = clock
        self._pending: dict[str, float] = {}
        self._counts: dict[_Pending, list[float]] = {}  # -> [verifications, last at]
        self.admitted: dict[str, Admitted] = {}
        """Key id -> its admitted requests of the current minute (:data:`Admitted`). An
        admitted request at *now* whose key's entry spans *now* and holds fewer than
        :data:`ADMITTED_MAX` times is counted by appending *now* to its list, without a call
        or a lock (``list.append`` is atomic): the usual count, which the verifier makes
        itself. Any other goes through :meth:`note`. The lists are emptied, never replaced
        while their minute lasts, so an append that races a write is counted by the next.
        A forked child gets a new mapping: read it from the recorder each time."""
        # lists replaced (their minute is over), with when (time.monotonic()): each write
        # folds them again, for an append that found one just before (a thread paused
        # between its lookup and its append), until RETIRED_SECONDS have passed
        self._retired: list[tuple[float, Admitted]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # one flag for the hot path: the writer thread is still to start in this process
        self._start_due = interval is not None
        self._pruned_at = _NEVER
        self.writes = 0
        """Batches written so far (for tests and monitoring)."""
        self.dropped = 0
        """Verifications not counted because *max_pending* counts were waiting."""
        live.add(self)

    def note(self, reason: Reason, identity: Identity | None, prefix: str, now: float) -> None:
        """Count one verification with outcome *reason* at *now* (Unix seconds), of the key
        with *identity* (``None``: no secret matched, and the key is known only by its
        *prefix*); note the key's use when its secret matched and it was usable."""
        if not self.analytics:
            if identity is not None and reason in _USED:
                self.record(identity.key_id, now)
            return
        # [verifications, the last one's time]: the time is the key's last use when the
        # outcome is a use, so the count also notes last_used_at at no further cost
        lock = self._lock
        lock.acquire()  # acquire/release in try costs half what "with" does
        try:
            if reason is _OK and identity is not None:
                self._admit(identity, now)
                return
            minute = now // 60
            if identity is None:
                # no secret matched: the app is the one the prefix names, found at write time
                count: _Pending = ("?" + prefix, "", reason, minute)
            else:
                count = (identity.app_slug, identity.key_id, reason, minute)
            counts = self._counts
            cell = counts.get(count)
            if cell is None and len(counts) + len(self.admitted) < self.max_pending:
                cell = counts[count] = [0, now]
            if cell is not None:
                cell[0] += 1
                cell[1] = now
            else:
                self.dropped += 1
                if identity is not None and reason in _USED:
                    self._pending[identity.key_id] = max(
                        now, self._pending.get(identity.key_id, _NEVER)
                    )
        finally:
            lock.release()
            if self._start_due:
                self._start()

    def _admit(self, identity: Identity, now: float) -> None:
        """Count an admitted request in its key's list of the minute (call with the lock
        held; the verifier appends the usual one itself, see :attr:`admitted`): a full list
        is folded into its count first, the list of another minute retired."""
        key_id = identity.key_id
        found = self.admitted.get(key_id)
        if found is not None:
            if found[0] <= now < found[1]:
                if len(found[2]) >= ADMITTED_MAX:
                    self._fold(found)
                found[2].append(now)
                return
            self._fold(found)
            self._retire(found)
            del self.admitted[key_id]
        if len(self._counts) + len(self.admitted) >= self.max_pending:
            self.dropped += 1
            self._pending[key_id] = max(now, self._pending.get(key_id, _NEVER))
            return
        minute = now // 60
        start = minute * 60
        count = (identity.app_slug, key_id, _OK, minute)
        self.admitted[key_id] = (start, start + 60, [now], count)

    def _fold(self, admitted: Admitted) -> None:
        """Move the times in *admitted*'s list into its count (call with the lock held).
        Exact while other threads append: appends land after the times taken, and only
        those are removed."""
        times = admitted[2]
        taken = len(times)
        if not taken:
            return
        last = max(times[:taken])
        del times[:taken]
        count = admitted[3]
        cell = self._counts.get(count)
        if cell is None:  # within the bound: the list took its place when it was made
            cell = self._counts[count] = [0, _NEVER]
        cell[0] += taken
        if last > cell[1]:
            cell[1] = last

    def _fold_all(self) -> None:
        """Move every admitted time into its count before a write (call with the lock held);
        lists of minutes that have ended are retired."""
        now = self._clock()
        for key_id, found in list(self.admitted.items()):
            self._fold(found)
            if found[1] <= now:
                self._retire(found)
                del self.admitted[key_id]
        for _, found in self._retired:
            self._fold(found)
        kept_from = time.monotonic() - RETIRED_SECONDS
        self._retired = [retired for retired in self._retired if retired[0] >= kept_from]

    def _retire(self, admitted: Admitted) -> None:
        retired = self._retired
        retired.append((time.monotonic(), admitted))
        if len(retired) > self.max_pending:  # no write for long: the oldest are folded already
            del retired[: len(retired) - self.max_pending]

    def record(self, key_id: str, now: float) -> None:
        """Note that *key_id* was used at *now* (Unix seconds), skipped when a use within
        the last second is already noted (``last_used_at`` is precise to a second)."""
        if now - self._pending.get(key_id, _NEVER) < 1.0:
            return
        with self._lock:
            if self._pending.get(key_id, 0.0) < now:
                self._pending[key_id] = now
        if self._start_due:
            self._start()

    def _start(self) -> None:
        with self._lock:
            self._start_due = False
            if self._thread is not None or self.interval is None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="keysentry-usage", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.interval is not None
        self._prune_if_due()
        while not self._stop.wait(self.interval):
            self.flush()
            self._prune_if_due()

    def pending(self) -> int:
        """How many keys have a use not yet written."""
        with self._lock:
            counted = {key for (_, key, outcome, _) in self._counts if outcome in _USED}
            counted.update(found[3][1] for found in self._admitted_lists() if found[2])
            return len(counted | self._pending.keys())

    def pending_counts(self) -> int:
        """How many (app, key, outcome, minute) counts wait to be written."""
        with self._lock:
            counts = self._counts
            waiting = {found[3] for found in self._admitted_lists() if found[2]}
            return len(counts) + len(waiting.difference(counts))

    def _admitted_lists(self) -> list[Admitted]:
        return [*self.admitted.values(), *(found for _, found in self._retired)]

    def flush(self) -> int:
        """Write what is pending now; return how many keys' ``last_used_at`` were written
        (0 if the store failed: what was pending stays, and the next flush retries it)."""
        with self._flush_lock:
            with self._lock:
                self._fold_all()
                batch, self._pending = self._pending, {}
                counts, self._counts = self._counts, {}
                for (_, key_id, outcome, _), (_, at) in counts.items():
                    if outcome in _USED and batch.get(key_id, _NEVER) < at:
                        batch[key_id] = at
            written = {(app, key, outcome, int(minute)): int(cell[0])
                       for (app, key, outcome, minute), cell in counts.items()}  # fmt: skip
            self._write_counts(written)
            if not batch:
                return 0
            try:
                self._store.record_usage(
                    {key_id: datetime.fromtimestamp(t, UTC) for key_id, t in batch.items()}
                )
            except StoreError as exc:
                with self._lock:
                    for key_id, t in batch.items():
                        if self._pending.get(key_id, t) <= t:
                            self._pending[key_id] = t
                logger.warning(
                    "keysentry: could not write last_used_at for %d keys (will retry): %s",
                    len(batch), exc,
                )  # fmt: skip
                return 0
            self.writes += 1
            return len(batch)

    def _write_counts(self, counts: dict[_Count, int]) -> None:
        if not counts:
            return
        try:
            self._store.add_usage(rollup(self._attributed(counts)))
        except StoreError as exc:
            with self._lock:  # back for the next attempt, within the bound
                pending = self._counts
                for count, n in counts.items():
                    cell = pending.get(count)
                    if cell is not None:
                        cell[0] += n
                    elif len(pending) < self.max_pending:
                        pending[count] = [n, _NEVER]  # its last use is written already
                    else:
                        self.dropped += n
            logger.warning(
                "keysentry: could not write %d usage counts (will retry): %s", len(counts), exc
            )

    def _attributed(self, counts: dict[_Count, int]) -> dict[_Count, int]:
        """Counts whose secret matched no key go to the one live app with their prefix (to
        none when no app, or several, have it)."""
        if not any(app.startswith("?") for app, _, _, _ in counts):
            return counts
        with self._store.read() as session:
            apps: dict[str, list[str]] = {}
            for app in session.list_apps():
                apps.setdefault("?" + app.key_prefix, []).append(app.app_slug)
        out: dict[_Count, int] = {}
        for (app_slug, key_id, outcome, minute), n in counts.items():
            if app_slug.startswith("?"):
                owners = apps.get(app_slug, [])
                if len(owners) != 1:
                    continue
                app_slug = owners[0]
            count = (app_slug, key_id, outcome, minute)
            out[count] = out.get(count, 0) + n
        return out

    def prune(self, now: float | None = None) -> None:
        """Delete buckets and events older than :attr:`retention` allows.

        Raises:
            StoreError: the store failed.
        """
        now = self._clock() if now is None else now
        events = self.retention.events
        self._store.prune_usage(
            self.retention.cutoffs(now),
            None if events is None else datetime.fromtimestamp(now - events.total_seconds(), UTC),
        )

    def _prune_if_due(self) -> None:
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_INTERVAL:
            return
        self._pruned_at = now
        try:
            self.prune()
        except StoreError as exc:
            logger.warning("keysentry: could not prune usage and events: %s", exc)

    def close(self) -> None:
        """Stop the writer thread and write what is pending."""
        self._closed = True
        self._start_due = False
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.flush()
        live.discard(self)

    def _after_fork(self) -> None:
        # the parent's pending uses are the parent's to write; its thread did not survive
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending = {}
        self._counts = {}
        self.admitted = {}
        self._retired = []
        self._stop = threading.Event()
        self._thread = None
        self._start_due = self.interval is not None and not self._closed
        self._pruned_at = _NEVER
