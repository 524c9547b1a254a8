"""The Redis limiter against the real Redis: the model, exact arithmetic, calendar months,
one round trip, and many processes and threads at once."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysentry.core.ratelimit import Limit, compile_limits, evaluate, window
from keysentry.limiters.redis import RedisLimiter
from keysentry.models import RateLimitRule
from tests.conftest import REDIS_URL, require_redis
from tests.core.test_ratelimit import agrees_with_the_model, limit, rules_st, timeline_st
from tests.own_services import OwnRedis

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def shared() -> Iterator[RedisLimiter]:
    """One limiter (and connection pool) for the Hypothesis tests; each example uses
    counter names of its own."""
    require_redis()
    limiter = RedisLimiter(REDIS_URL, redis_time=False, key_prefix="kstest:model:")
    yield limiter
    client = limiter._sync_client()
    keys = list(client.scan_iter(match="kstest:model:*", count=1000))
    if keys:
        client.delete(*keys)
    limiter.close()


@settings(max_examples=150)
@given(rules_st, timeline_st)
def test_redis_limiter_agrees_with_the_reference_model(
    shared: RedisLimiter, rules: list[tuple[int, int, bool, str]], timeline: list[tuple[int, int]]
) -> None:
    agrees_with_the_model(shared, rules, timeline, tag=f"{{{secrets.token_hex(6)}}}:")


BIG = 31 * 86_400_000  # the longest window, in ms


@settings(max_examples=300)
@given(
    max_requests=st.integers(1, 1_000_000_000),
    window_ms=st.integers(1, BIG),
    data=st.data(),
)
def test_admission_is_exact_at_the_largest_values(
    shared: RedisLimiter, max_requests: int, window_ms: int, data: st.DataObject
) -> None:
    # Lua numbers are doubles: 10^9 requests x a 31-day window overflows their 53 bits, so
    # the script multiplies in halves. Seed a counter at the edge and compare with core.
    lim = limit(max_requests, window_ms, True)
    start = 1_000 * window_ms
    elapsed = data.draw(st.integers(0, window_ms - 1))
    current = data.draw(st.integers(0, max_requests))
    previous = data.draw(st.integers(0, max_requests))
    key = f"{{{secrets.token_hex(6)}}}:edge"
    client = shared._sync_client()
    client.set(f"kstest:model:{key}", f"{start} {window_ms} {current} {previous}")
    now = start + elapsed
    allowed, (outcome,) = shared.hit([(lim, key)], now)
    expected = evaluate(lim, (current, previous), now)
    assert (allowed, outcome) == (expected.allowed, expected)


FIRST_MS = int(datetime(1971, 1, 1, tzinfo=UTC).timestamp() * 1000)
LAST_MS = int(datetime(2199, 12, 31, tzinfo=UTC).timestamp() * 1000)
month = compile_limits([RateLimitRule(unit="calendar_month", max_requests=1)])[0]


@settings(max_examples=200)
@given(st.integers(FIRST_MS, LAST_MS))
def test_calendar_months_are_the_same_in_lua_and_python(shared: RedisLimiter, now: int) -> None:
    start, length = window(month, now)
    key = f"{{{secrets.token_hex(6)}}}:month"
    assert shared.hit([(month, key)], now)[0]  # the first of this month
    assert not shared.hit([(month, key)], start + length - 1)[0]  # same month, last ms
    allowed, (outcome,) = shared.hit([(month, key)], start + length)  # next month
    assert allowed
    assert outcome.reset_ms == window(month, start + length)[1]


def test_one_round_trip_whatever_the_number_of_rules(tmp_path: Path) -> None:
    import redis

    own = OwnRedis(tmp_path / "redis")  # ours alone: its command counts are this test's
    own.start()
    limiter = RedisLimiter(own.url)
    monitor = redis.Redis.from_url(own.url)
    try:
        units = ("second", "minute", "hour", "day", "calendar_month")
        rules = [RateLimitRule(unit=u, max_requests=1000) for u in units]
        limits = compile_limits(rules)
        checks = [(lim, f"{{app}}:{lim.name}") for lim in limits]
        limiter.hit(checks, 0)  # loads the script
        before = _calls(monitor)
        for _ in range(20):
            allowed, outcomes = limiter.hit(checks, 0)
            assert allowed
            assert len(outcomes) == 5
        after = _calls(monitor)
    finally:
        monitor.close()
        limiter.close()
        own.stop_if_running()
    # INFO commandstats counts every command the server ran, those run inside scripts too:
    # 20 requests of 5 rules each were 20 EVALSHA, and everything else ran inside them (and
    # our own INFO): one read for all 5 counters, one write each, with its expiry.
    ran = after - before
    assert ran.pop("evalsha") == 20
    assert set(ran) <= {"info", "time", "mget", "set"}, ran
    assert ran["mget"] == 20
    assert ran["set"] == 100


def _calls(client: Any) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): v["calls"] for name, v in stats.items()})


def test_misconfiguration_is_named() -> None:
    from keysentry.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="on_limiter_error"):
        RedisLimiter(REDIS_URL, on_error="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="limiter_timeout"):
        RedisLimiter(REDIS_URL, timeout=0)


def test_limits_keep_their_hash_tag() -> None:
    lim: Limit = compile_limits([RateLimitRule(unit="second", max_requests=1)])[0]
    from keysentry.core.ratelimit import counter_key

    assert counter_key(lim, lim.endpoints[0], "key_1", "billing", None).startswith("{billing}:")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_redis_that_forgot_the_script_is_given_it_again(
    redis_prefix: str, asynchronous: bool
) -> None:
    # a restarted (or flushed) Redis no longer knows the script: the request that finds out
    # loads it and is still decided, with no error and no fallback
    import redis

    limiter = RedisLimiter(REDIS_URL, key_prefix=redis_prefix, on_error="closed")
    (lim,) = compile_limits([RateLimitRule(unit="minute", max_requests=10)])
    checks = [(lim, "{app}:forgot")]
    admin = redis.Redis.from_url(REDIS_URL)
    try:
        assert limiter.hit(checks, 0)[0]
        admin.script_flush()
        if asynchronous:

            async def hit_then_close() -> Any:
                try:
                    return await limiter.ahit(checks, 0)
                finally:
                    await limiter.aclose()

            allowed, (outcome,) = asyncio.run(hit_then_close())
        else:
            allowed, (outcome,) = limiter.hit(checks, 0)
        assert allowed
        assert outcome.remaining == 8
        assert limiter.available
    finally:
        admin.close()
        limiter.close()


def test_a_counter_left_in_the_old_hash_layout_is_replaced(redis_prefix: str) -> None:
    # counters were hashes in earlier builds; one still in Redis (a monthly one lives for two
    # months) must not break the request: it reads as empty and is overwritten
    limiter = RedisLimiter(REDIS_URL, key_prefix=redis_prefix)
    (lim,) = compile_limits([RateLimitRule(unit="calendar_month", max_requests=5)])
    client = limiter._sync_client()
    client.hset(f"{redis_prefix}{{app}}:old", mapping={"s": 1, "l": 2, "c": 3, "p": 4})
    try:
        allowed, (outcome,) = limiter.hit([(lim, "{app}:old")], 0)
        assert allowed
        assert outcome.remaining == 4
        assert client.type(f"{redis_prefix}{{app}}:old") == b"string"
        assert limiter.available
    finally:
        limiter.close()


def _client_ids(connections: list[Any]) -> list[int]:
    ids = []
    for connection in connections:
        connection.send_command("CLIENT", "ID")
        ids.append(int(connection.read_response()))
    return ids


def test_connections_redis_dropped_are_replaced_within_the_same_request(
    redis_prefix: str,
) -> None:
    # the limiter keeps its connections between requests (no health check on each: a poll()
    # per call); when Redis has closed them (a restart, a timeout, CLIENT KILL) the request
    # that finds out is still decided, on a new connection, and the other idle ones go too
    import redis

    limiter = RedisLimiter(REDIS_URL, key_prefix=redis_prefix, on_error="closed")
    (lim,) = compile_limits([RateLimitRule(unit="minute", max_requests=100)])
    checks = [(lim, "{app}:dropped")]
    limiter.hit(checks, 0)
    # what overlapping requests leave behind: more idle connections than one (made here
    # rather than by racing threads, whose overlap a busy machine does not promise)
    pool = limiter._sync_client().connection_pool
    limiter._idle.extend(pool.get_connection() for _ in range(3))
    idle = list(limiter._idle)
    assert len(idle) == 4
    admin = redis.Redis.from_url(REDIS_URL)
    try:
        killed = _client_ids(idle)
        for client_id in killed:
            assert admin.client_kill_filter(_id=str(client_id)) == 1
        used = 1  # requests so far
        allowed, (outcome,) = limiter.hit(checks, 0)
        assert allowed, "a dropped connection must not fail the request"
        assert outcome.remaining == 100 - used - 1
        assert limiter.available
        assert len(limiter._idle) == 1  # the new one; the dead ones were dropped
        assert _client_ids(limiter._idle)[0] not in killed  # a new connection
        assert limiter.hit(checks, 0)[1][0].remaining == 100 - used - 2
    finally:
        admin.close()
        limiter.close()


def test_async_connections_redis_dropped_are_replaced_within_the_same_request(
    redis_prefix: str,
) -> None:
    import redis

    limiter = RedisLimiter(REDIS_URL, key_prefix=redis_prefix, on_error="closed")
    (lim,) = compile_limits([RateLimitRule(unit="minute", max_requests=100)])
    checks = [(lim, "{app}:adropped")]
    admin = redis.Redis.from_url(REDIS_URL)

    async def scenario() -> tuple[Any, ...]:
        try:
            await asyncio.gather(*(limiter.ahit(checks, 0) for _ in range(3)))
            _, _, idle = limiter._async_client()
            assert len(idle) == 3  # three at once: three connections
            ids = []
            for connection in idle:
                await connection.send_command("CLIENT", "ID")
                ids.append(int(await connection.read_response()))
            for client_id in ids:
                assert admin.client_kill_filter(_id=str(client_id)) == 1
            result = await limiter.ahit(checks, 0)
            return result, len(idle)
        finally:
            await limiter.aclose()

    try:
        (allowed, (outcome,)), idle_after = asyncio.run(scenario())
        assert allowed
        assert outcome.remaining == 100 - 4
        assert idle_after == 1
        assert limiter.available
    finally:
        admin.close()
        limiter.close()


@given(st.lists(st.one_of(st.text(max_size=40), st.integers(-(10**12), 10**12)), max_size=8))
def test_commands_are_packed_as_redis_py_packs_them(args: list[str | int]) -> None:
    # (redis-py splits a first argument at spaces, for "CONFIG GET": ours is always EVALSHA)
    from redis.connection import Connection

    from keysentry.limiters._redis_script import resp

    assert resp("EVALSHA", *args) == b"".join(Connection().pack_command("EVALSHA", *args))
