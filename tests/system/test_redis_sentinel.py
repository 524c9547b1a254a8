"""The Redis limiter through Sentinel, on a primary, a replica and three sentinels of our
own: limits are exact, the limiter follows a failover, and while it lasts requests are
answered as ``on_limiter_error`` says (never a 500)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysentry import Decision, KeySentry
from tests.own_services import OwnSentinels

pytestmark = pytest.mark.system


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[OwnSentinels]:
    own = OwnSentinels(tmp_path)
    try:
        own.start()
        yield own
    finally:
        own.stop()


def test_the_limiter_follows_a_failover(sentinels: OwnSentinels) -> None:
    ks = KeySentry("memory://", limiter_url=sentinels.url, on_limiter_error="closed",
                   limiter_timeout=0.5)  # fmt: skip
    ks.create_rate_limit_scheme("hourly", "H", [{"unit": "hour", "max_requests": 1000}])
    ks.create_api_auth_app(app_slug="api", name="A", key_prefix="sk_live",
                           rate_limit_scheme_slug="hourly")  # fmt: skip
    secret = ks.create_api_key("api", "k").secret

    async def on_a_loop() -> Decision:  # the async client, closed with its event loop
        try:
            return await ks.averify(secret)
        finally:
            await ks.limiter.aclose()

    before = [ks.verify(secret), asyncio.run(on_a_loop()), ks.verify(secret)]
    assert [dict(v.headers)["x-ratelimit-remaining"] for v in before] == ["999", "998", "997"]
    time.sleep(0.5)  # the replica has the counter (replication is asynchronous)

    sentinels.primary.kill()
    killed = time.monotonic()
    during: list[int] = []
    while time.monotonic() - killed < 60:
        verdict = ks.verify(secret)
        if verdict.status == 200 and verdict.rate_limits:
            break  # counted in Redis again: the new primary
        during.append(verdict.status)
        time.sleep(0.05)
    else:
        pytest.fail(f"no failover within 60 s: {during[-5:]}")
    gap = time.monotonic() - killed
    remaining = int(dict(verdict.headers)["x-ratelimit-remaining"])
    assert set(during) <= {503}, during  # "closed": unavailable, never 500, never unlimited
    assert 990 <= remaining <= 996  # the replica's copy of the counter carried on
    print(f"failover gap: {gap:.1f} s, {len(during)} requests answered 503")
    ks.close()


def test_sentinel_urls_are_checked() -> None:
    from keysentry import ConfigurationError

    for bad in ("redis+sentinel://127.0.0.1:26379", "redis+sentinel://h:1/ks/x"):
        with pytest.raises(ConfigurationError):
            KeySentry("memory://", limiter_url=bad)
