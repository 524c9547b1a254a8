"""Our limiters against ``limits`` (the engine under slowapi and Flask-Limiter), side by side.

* In-process, one rule: ``MemoryLimiter.hit`` (with reading the clock, as a request does)
  against ``limits``' ``SlidingWindowCounterRateLimiter`` on ``MemoryStorage``: the same
  algorithm.
* Redis, two rules (per second and per hour): ``RedisLimiter.hit``, one script for both,
  against ``limits``' sliding window counter on ``RedisStorage``, which takes one call per
  limit (and cannot make the pair atomic). Round trips per request are counted from Redis's
  client (how often redis-py sends) and reported beside the times.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from typing import Any

from benchmarks.world import HUGE  # a quota no run reaches: every hit is admitted and counted
from keysentry.core.ratelimit import compile_limits
from keysentry.limiters.memory import MemoryLimiter
from keysentry.models import RateLimitRule

REDIS_URL = "redis://127.0.0.1:6379/0"


def _limits(*units: str) -> Any:
    return compile_limits([RateLimitRule(unit=u, max_requests=HUGE) for u in units])


def scenarios(compare: Any, rounds: int) -> list[Any]:
    from limits import RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerSecond
    from limits.storage import MemoryStorage, RedisStorage
    from limits.strategies import SlidingWindowCounterRateLimiter

    results = []
    (minute,) = _limits("minute")
    ours_memory = MemoryLimiter()
    checks = [(minute, "{app}:per_key|key_1|bench")]
    theirs_memory = SlidingWindowCounterRateLimiter(MemoryStorage())
    per_minute = RateLimitItemPerMinute(HUGE)
    results.append(
        compare(
            "limiter in-process, 1 rule",
            ("MemoryLimiter.hit (sliding window)",
             lambda: ours_memory.hit(checks, int(time.time() * 1000))),
            ("limits SlidingWindowCounter, MemoryStorage",
             lambda: theirs_memory.hit(per_minute, "key_1")),
            number=20_000,
            rounds=rounds,
            target=2.0,
        )
    )  # fmt: skip

    try:
        import redis

        probe = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        probe.ping()
    except Exception as exc:  # no Redis: say so and skip the scenario
        print(f"(skipping the Redis scenario: {exc})")
        return results
    from keysentry.limiters.redis import RedisLimiter

    prefix = f"ksbench:{secrets.token_hex(4)}:"
    ours_redis = RedisLimiter(REDIS_URL, key_prefix=prefix, timeout=2.0)
    two = [(lim, f"{{app}}:per_key|key_1|{lim.name}") for lim in _limits("second", "hour")]
    theirs_redis = SlidingWindowCounterRateLimiter(RedisStorage(REDIS_URL))
    items = (RateLimitItemPerSecond(HUGE), RateLimitItemPerHour(HUGE))

    def ours() -> object:
        return ours_redis.hit(two, 0)

    def theirs() -> object:
        hits = [theirs_redis.hit(item, prefix, "key_1") for item in items]  # both, always
        return all(hits)

    trips = {name: _round_trips(fn) for name, fn in (("ours", ours), ("limits", theirs))}
    result = compare(
        "limiter on Redis, 2 rules",
        (f"RedisLimiter.hit ({trips['ours']:g} round trips/request)", ours),
        (f"limits SlidingWindowCounter, RedisStorage ({trips['limits']:g} round trips)",
         theirs),
        number=500,
        rounds=rounds,
        target=2.0,
    )  # fmt: skip
    results.append(result)
    ours_redis.close()
    for key in probe.scan_iter(match=f"*{prefix}*", count=1000):
        probe.delete(key)
    probe.close()
    return results


def _round_trips(fn: Any, requests: int = 200) -> float:
    """Round trips per call of *fn*: how often redis-py's connections send (a pipeline or a
    script is one send, and one reply waited for)."""
    from redis.connection import Connection

    fn()  # loads scripts
    sends = Counter[str]()
    original = Connection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sends["sends"] += 1
        original(self, command, check_health)

    Connection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        for _ in range(requests):
            fn()
    finally:
        Connection.send_packed_command = original  # type: ignore[method-assign]
    return sends["sends"] / requests
