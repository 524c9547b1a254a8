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

from keysentry.core.ratelimit import Counter, Limit, Outcome, decide_limits, window

__all__ = ["MemoryLimiter"]


class MemoryLimiter:
    """Rate-limit counters in this process's memory.

    Args:
        max_counters: how many counters to keep before dropping stale ones.
    """

    def __init__(self, max_counters: int = 100_000) -> None:
        # key -> [window start ms, window length ms, count in that window, count before]
        self._counters: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._max = max_counters

    def _state(self, limit: Limit, key: str, now_ms: int) -> tuple[int, int, Counter]:
        start, length = window(limit, now_ms)
        stored = self._counters.get(key)
        if stored is None:
            return start, length, Counter()
        if stored[0] == start:
            return start, length, Counter(stored[2], stored[3])
        if stored[0] + stored[1] == start:  # the stored window is the one just before
            return start, length, Counter(0, stored[2])
        return start, length, Counter()

    def hit(
        self, checks: Sequence[tuple[Limit, str]], now_ms: int
    ) -> tuple[bool, tuple[Outcome, ...]]:
        """Check and count one request against every ``(limit, key)``; see the port."""
        with self._lock:
            states = [self._state(limit, key, now_ms) for limit, key in checks]
            allowed, outcomes = decide_limits(
                [limit for limit, _ in checks], [state[2] for state in states], now_ms
            )
            if allowed:
                for (_, key), (start, length, counter) in zip(checks, states, strict=True):
                    self._counters[key] = [start, length, counter.current + 1, counter.previous]
                if len(self._counters) > self._max:
                    self._shrink(now_ms)
            return allowed, outcomes

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

    def close(self) -> None:
        """Forget every counter."""
        with self._lock:
            self._counters.clear()
