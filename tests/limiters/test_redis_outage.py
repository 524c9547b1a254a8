"""Redis killed in the middle of a run, and brought back: each ``on_limiter_error`` mode does
what it says, nothing raises, and exact limiting resumes within 2 s of Redis returning.

The Redis here is our own ``redis-server`` on a spare port, killed by its pid: the shared one
on 6379 is never touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysentry import KeySentry
from keysentry.core.decision import Decision
from keysentry.limiters.redis import RedisLimiter
from tests.own_services import OwnRedis

pytestmark = pytest.mark.redis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop_if_running()


def sentry(url: str, mode: str) -> tuple[KeySentry, str]:
    limiter = RedisLimiter(url, on_error=mode, retry_after=0.2)  # type: ignore[arg-type]
    ks = KeySentry("memory://", limiter=limiter)
    ks.create_rate_limit_scheme("five", "Five", [{"unit": "hour", "max_requests": 5}])
    ks.create_api_auth_app(app_slug="api", name="API", key_prefix="sk_live",
                           rate_limit_scheme_slug="five")  # fmt: skip
    return ks, ks.create_api_key("api", "k").secret


def both(ks: KeySentry, secret: str) -> list[Decision]:
    """One request through the sync driver and one through the async one."""

    async def one() -> Decision:
        verdict = await ks.averify(secret)
        await ks.limiter.aclose()  # this loop ends here
        return verdict

    return [ks.verify(secret), asyncio.run(one())]


@pytest.mark.parametrize("mode", ["open", "closed", "local"])
def test_redis_killed_and_back(own_redis: OwnRedis, mode: str) -> None:
    ks, secret = sentry(own_redis.url, mode)
    before = both(ks, secret)
    assert [v.status for v in before] == [200, 200]
    assert dict(before[1].headers)["x-ratelimit-remaining"] == "3"  # counted in Redis

    own_redis.kill()
    during = both(ks, secret) + both(ks, secret) + both(ks, secret)
    assert not ks.limiter.available  # type: ignore[attr-defined]
    if mode == "open":
        assert {v.status for v in during} == {200}
        assert all("ratelimit" not in dict(v.headers) for v in during)
    elif mode == "closed":
        assert {v.status for v in during} == {503}
        assert all(dict(v.headers)["retry-after"] == "1" for v in during)
    else:  # counted in this process, exactly, from zero
        assert [v.status for v in during] == [200] * 5 + [429]
        assert dict(during[-1].headers)["retry-after"]
    # a bad key is still refused: authentication never fails open
    assert ks.verify("sk_live_" + "0" * 38).status == 401

    own_redis.start()  # empty: it keeps nothing on disk
    back = time.monotonic()
    while not (verdict := ks.verify(secret)).headers or not ks.limiter.available:  # type: ignore[attr-defined]
        assert time.monotonic() - back < 2.0, "exact limiting did not resume within 2 s"
        time.sleep(0.02)
    # counted in the new Redis from zero: 5 admitted in all, the 6th refused
    statuses = [verdict.status] + [ks.verify(secret).status for _ in range(5)]
    assert statuses == [200] * 5 + [429]
    ks.close()
