"""Rate limiters: where counters live. ``memory://`` (in this process) for now."""

from __future__ import annotations

from keysentry.limiters.base import Limiter
from keysentry.limiters.memory import MemoryLimiter

__all__ = ["Limiter", "MemoryLimiter"]
