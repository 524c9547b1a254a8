"""Rate limiters: where counters live. ``memory://`` (this process) or ``redis://`` (shared).

:class:`~keysentry.limiters.redis.RedisLimiter` lives in ``keysentry.limiters.redis`` and is
imported only when a Redis URL is configured (``redis`` is an optional extra).
"""

from __future__ import annotations

from keysentry.limiters.base import Limiter
from keysentry.limiters.memory import MemoryLimiter

__all__ = ["Limiter", "MemoryLimiter"]
