"""``last_used_at``, written behind: requests note the time in memory, a background thread
writes what accumulated every ``interval`` seconds (docs/design.md §7), in one statement
batch, never a write per request.

What is pending is also written when the :class:`~keysentry.KeySentry` closes (application
shutdown), when the interpreter exits, and on SIGTERM under a server that leaves SIGTERM at
its default (werkzeug's development server, waitress): see :func:`install_stop_handler`.
A store that cannot be reached keeps the pending times for the next attempt: usage is only
ever late, never lost while the process lives, and never moves backwards (the store keeps
the later of two times).

Fork-safe: the writer thread is started by the first use in each process; a child made by
``fork`` starts its own and does not write what its parent had noted.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from datetime import UTC, datetime

from keysentry.errors import StoreError
from keysentry.stores.base import KeyStore

__all__ = ["UsageRecorder", "install_stop_handler"]

logger = logging.getLogger("keysentry")
_live: weakref.WeakSet[UsageRecorder] = weakref.WeakSet()
_NEVER = float("-inf")


class UsageRecorder:
    """Collect "key *k* was used at *t*" and write it to *store* in batches.

    Args:
        store: where ``last_used_at`` is written (:meth:`KeyStore.record_usage`).
        interval: seconds between writes; ``None`` writes only on :meth:`flush` and
            :meth:`close`.
    """

    def __init__(self, store: KeyStore, *, interval: float | None = 10.0) -> None:
        self._store = store
        self.interval = interval
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.writes = 0
        """Batches written so far (for tests and monitoring)."""
        _live.add(self)

    def record(self, key_id: str, now: float) -> None:
        """Note that *key_id* was used at *now* (Unix seconds). Called once per request: a
        dict assignment under a lock nobody holds for long, skipped when a use within the
        last second is already noted (``last_used_at`` is precise to a second)."""
        if now - self._pending.get(key_id, _NEVER) < 1.0:
            return
        with self._lock:
            if self._pending.get(key_id, 0.0) < now:
                self._pending[key_id] = now
        if self._thread is None and self.interval is not None and not self._closed:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="keysentry-usage", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            self.flush()

    def pending(self) -> int:
        """How many keys have a use not yet written."""
        return len(self._pending)

    def flush(self) -> int:
        """Write what is pending now; return how many keys were written (0 if the store
        failed: the times stay pending and the next flush retries them)."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
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

    def close(self) -> None:
        """Stop the writer thread and write what is pending."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.flush()
        _live.discard(self)

    def _after_fork(self) -> None:
        # the parent's pending uses are the parent's to write; its thread did not survive
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending = {}
        self._stop = threading.Event()
        self._thread = None


def _after_fork_in_child() -> None:
    for recorder in list(_live):
        recorder._after_fork()


def _flush_at_exit() -> None:
    for recorder in list(_live):
        try:
            recorder.flush()
        except Exception:  # exiting: report, never raise
            logger.exception("keysentry: could not write last_used_at at exit")


_STOP_FLUSH_SECONDS = 5.0


def _flush_then_terminate(signum: int, frame: object) -> None:
    # In a thread: the interrupted main thread may hold a recorder's lock; bounded, so a
    # stuck store cannot keep the process from stopping.
    writer = threading.Thread(target=_flush_at_exit, name="keysentry-stop", daemon=True)
    writer.start()
    writer.join(_STOP_FLUSH_SECONDS)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)  # then stop exactly as the default would have


def install_stop_handler() -> bool:
    """Write pending ``last_used_at`` times on SIGTERM, where nothing else would.

    A SIGTERM left at its default kills the process before :mod:`atexit` runs: that is the
    case under werkzeug's server and waitress (gunicorn and uvicorn catch it and shut down
    cleanly). Only a default SIGTERM, in the main thread, is replaced; the handler writes
    for at most 5 seconds, then terminates the process as the default would. Returns
    whether the handler was installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False  # the server's own, or ours already
        signal.signal(signal.SIGTERM, _flush_then_terminate)
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        return False
    return True


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)
