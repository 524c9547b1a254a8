"""Rate limiters: where counters live. ``memory://`` (this process) or ``redis://`` (shared).

:class:`~keysentry.limiters.redis.RedisLimiter` lives in ``keysentry.limiters.redis`` and is
imported only when a Redis URL is configured (``redis`` is an optional extra).
"""

from __future__ import annotations

from keysentry.limiters.base import Limiter, OnError
from keysentry.limiters.memory import MemoryLimiter

__all__ = ["Limiter", "MemoryLimiter", "limiter_from_url"]


def limiter_from_url(
    url: str | None,
    *,
    timeout: float = 0.1,
    on_error: OnError = "open",
    key_prefix: str = "keysentry:rl:",
) -> Limiter:
    """The limiter a checked URL names: ``None`` or ``memory://`` for this process; a Redis
    URL (one server, ``redis+cluster://``, ``redis+sentinel://``) for counters shared through
    Redis (needs ``keysentry[redis]``)."""
    if url is None or url.startswith("memory:"):
        return MemoryLimiter()
    from keysentry._redis import parse_redis_url

    if parse_redis_url(url).kind == "cluster":
        from keysentry.limiters.redis_cluster import RedisClusterLimiter

        return RedisClusterLimiter(url, timeout=timeout, on_error=on_error, key_prefix=key_prefix)
    from keysentry.limiters.redis import RedisLimiter

    return RedisLimiter(url, timeout=timeout, on_error=on_error, key_prefix=key_prefix)
