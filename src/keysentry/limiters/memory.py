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

    def hit(
        self, checks: Sequence[tuple[Limit, str]], now_ms: int
    ) -> tuple[bool, tuple[Outcome, ...]]:
        """Check and count one request against every ``(limit, key)``; see the port."""
        counters = self._counters
        if len(checks) == 1:
            return self._hit_one(checks[0][0], checks[0][1], now_ms)
        limits = []
        counts = []
        slots = []  # (key, window start, window length) to write if admitted
        with self._lock:
            for limit, key in checks:
                if limit.calendar is None:
                    length = limit.window_ms
                    start = now_ms - now_ms % length
                else:
                    start, length = window(limit, now_ms)
                stored = counters.get(key)
                if stored is None:
                    counts.append((0, 0))
                elif stored[0] == start:
                    counts.append((stored[2], stored[3]))
                elif stored[0] + stored[1] == start:  # the stored window is the one before
                    counts.append((0, stored[2]))
                else:
                    counts.append((0, 0))
                limits.append(limit)
                slots.append((key, start, length))
            allowed, outcomes = decide_limits(limits, counts, now_ms)
            if allowed:
                for (key, start, length), (current, previous) in zip(slots, counts, strict=True):
                    counters[key] = [start, length, current + 1, previous]
                if len(counters) > self._max:
                    self._shrink(now_ms)
            return allowed, outcomes

    async def ahit(
        self, checks: Sequence[tuple[Limit, str]], now_ms: int
    ) -> tuple[bool, tuple[Outcome, ...]]:
        """:meth:`hit`, for the port's async callers (no I/O, so nothing to await)."""
        return self.hit(checks, now_ms)

    def _hit_one(self, limit: Limit, key: str, now_ms: int) -> tuple[bool, tuple[Outcome, ...]]:
        # hit() for the common single rule, without the lists
        if limit.calendar is None:
            length = limit.window_ms
            start = now_ms - now_ms % length
        else:
            start, length = window(limit, now_ms)
        counters = self._counters
        with self._lock:
            stored = counters.get(key)
            if stored is None:
                current = previous = 0
            elif stored[0] == start:
                current, previous = stored[2], stored[3]
            elif stored[0] + stored[1] == start:  # the stored window is the one before
                current, previous = 0, stored[2]
            else:
                current = previous = 0
            outcome = evaluate(limit, (current, previous), now_ms)
            if outcome.allowed:
                if stored is not None and stored[0] == start:
                    stored[2] = current + 1
                else:
                    counters[key] = [start, length, current + 1, previous]
                    if len(counters) > self._max:
                        self._shrink(now_ms)
            return outcome.allowed, (outcome,)

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
