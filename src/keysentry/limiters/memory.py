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

from keysentry.core.ratelimit import Limit, Outcome, decide_limits, evaluate, window

__all__ = ["MemoryLimiter"]


class MemoryLimiter:
    """Rate-limit counters in this process's memory.

    Args:
        max_counters: how many counters to keep before dropping stale ones.
    """

    remote = False

    def __init__(self, max_counters: int = 100_000) -> None:
        # key -> [window start ms, window length ms, count in that window, count before]
        self._counters: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._max = max_counters

    def _read(self, limit: Limit, key: str, now_ms: int) -> tuple[int, int, int, int]:
        """``(window start, window length, count in it, count in the one before)`` of the
        counter *key* under *limit* now. Call with the lock held."""
        if limit.calendar is None:
            length = limit.window_ms
            start = now_ms - now_ms % length
        else:
            start, length = window(limit, now_ms)
        stored = self._counters.get(key)
        if stored is None:
            return start, length, 0, 0
        if stored[0] == start:
            return start, length, stored[2], stored[3]
        if stored[0] + stored[1] == start:  # the stored window is the one before
            return start, length, 0, stored[2]
        return start, length, 0, 0

    def _count(self, key: str, start: int, length: int, current: int, previous: int,
               now_ms: int) -> None:  # fmt: skip
        """Count one more request in *key*'s window. Call with the lock held."""
        self._counters[key] = [start, length, current + 1, previous]
        if len(self._counters) > self._max:
            self._shrink(now_ms)

    def hit(
        self, checks: Sequence[tuple[Limit, str]], now_ms: int
    ) -> tuple[bool, tuple[Outcome, ...]]:
        """Check and count one request against every ``(limit, key)``; see the port."""
        if len(checks) == 1:  # the common case, without the lists
            ((limit, key),) = checks
            with self._lock:
                start, length, current, previous = self._read(limit, key, now_ms)
                outcome = evaluate(limit, (current, previous), now_ms)
                if outcome.allowed:
                    self._count(key, start, length, current, previous, now_ms)
                return outcome.allowed, (outcome,)
        with self._lock:
            states = [self._read(limit, key, now_ms) for limit, key in checks]
            allowed, outcomes = decide_limits(
                [limit for limit, _ in checks], [(s[2], s[3]) for s in states], now_ms
            )
            if allowed:
                for (_, key), state in zip(checks, states, strict=True):
                    self._count(key, *state, now_ms)
            return allowed, outcomes

    async def ahit(
        self, checks: Sequence[tuple[Limit, str]], now_ms: int
    ) -> tuple[bool, tuple[Outcome, ...]]:
        """:meth:`hit`, for the port's async callers (no I/O, so nothing to await)."""
        return self.hit(checks, now_ms)

    def _shrink(self, now_ms: int) -> None:
        stale = [k for k, (start, length, *_) in self._counters.items()
                 if start + 2 * length <= now_ms]  # fmt: skip
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
