"""The in-process limiter: exact within one process, thread- and asyncio-safe, bounded.

One lock guards all counters, held only for the arithmetic of one request (no I/O, no
``await``), which makes checking every matching rule and then counting against all of them
atomic. Counters whose windows are long past are dropped when the table outgrows
*max_counters*; if it is still too large, the oldest counters go first (their clients get a
fresh window: the limiter fails open for them, never closed).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from keysentry.core.ratelimit import Limit, Outcome, decide_limits, judge, window

__all__ = ["MemoryLimiter"]


class MemoryLimiter:
    """Rate-limit counters in this process's memory.

    Args:
        max_counters: how many counters to keep before dropping stale ones.
    """

    remote = False

    def __init__(self, max_counters: int = 100_000) -> None:
        # key -> [window start ms, window end ms, count in that window, count before],
        # counted in place
        self._counters: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._max = max_counters

    def hit(
        self, checks: Sequence[tuple[Limit, str]], now_ms: int
    ) -> tuple[bool, tuple[Outcome, ...]]:
        """Check and count one request against every ``(limit, key)``; see the port."""
        counters = self._counters
        if len(checks) == 1:  # the common case, without decide_limits' lists
            ((limit, key),) = checks
            lock = self._lock
            lock.acquire()  # acquire/release in try costs half what "with" does
            try:
                counter = counters.get(key)
                # still in the counter's window (windows tile time): no need to ask window()
                if counter is None or not counter[0] <= now_ms < counter[1]:
                    counter = self._roll(key, counter, *window(limit, now_ms))
                    if len(counters) > self._max:
                        self._shrink(now_ms)
                start, end, current, previous = counter
                outcome = judge(limit, current, previous, now_ms - start, end - start)
                if outcome.allowed:
                    counter[2] = current + 1
            finally:
                lock.release()
            return outcome.allowed, (outcome,)
        with self._lock:
            rolled = []
            for limit, key in checks:
                counter = counters.get(key)
                if counter is None or not counter[0] <= now_ms < counter[1]:
                    counter = self._roll(key, counter, *window(limit, now_ms))
                rolled.append(counter)
            allowed, outcomes = decide_limits(
                [limit for limit, _ in checks], [(c[2], c[3]) for c in rolled], now_ms
            )
            if allowed:
                for counter in rolled:
                    counter[2] += 1
            if len(counters) > self._max:
                self._shrink(now_ms)
        return allowed, outcomes

    def _roll(self, key: str, counter: list[int] | None, start: int, length: int) -> list[int]:
        """Move *key*'s counter to the window that begins at *start* (once per window; call
        with the lock held): the count of the window before it carries over as "previous"."""
        previous = counter[2] if counter is not None and counter[1] == start else 0
        counter = self._counters[key] = [start, start + length, 0, previous]
        return counter

    async def ahit(
        self, checks: Sequence[tuple[Limit, str]], now_ms: int
    ) -> tuple[bool, tuple[Outcome, ...]]:
        """:meth:`hit`, for the port's async callers (no I/O, so nothing to await)."""
        return self.hit(checks, now_ms)

    def _shrink(self, now_ms: int) -> None:
        # a window ended a whole window ago: nothing of it weighs on the next one
        stale = [k for k, (start, end, *_) in self._counters.items()
                 if 2 * end - start <= now_ms]  # fmt: skip
        for key in stale:
            del self._counters[key]
        overflow = len(self._counters) - self._max
        for key in list(self._counters)[: max(overflow, 0)]:
            del self._counters[key]  # oldest first (dicts keep insertion order)

    def __len__(self) -> int:
        return len(self._counters)

    async def aclose(self) -> None:
        """Nothing belongs to an event loop here."""

    def close(self) -> None:
        """Forget every counter."""
        with self._lock:
            self._counters.clear()
