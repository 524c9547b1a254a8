"""Redis killed in the middle of a run, and brought back: each ``on_limiter_error`` mode does
what it says, nothing raises, and exact limiting resumes within 2 s of Redis returning.

The Redis here is our own ``redis-server`` on a spare port, killed by its pid: the shared one
on 6379 is never touched.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysentry import KeySentry
from keysentry.core.decision import Decision
from keysentry.limiters.redis import RedisLimiter
from tests.own_services import OwnRedis
from tests.system.test_processes import uvicorn

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


def _get(port: int, secret: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/whoami")
    request.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, headers = exc.code, dict(exc.headers)
    return status, {k.lower(): v for k, v in headers.items()}


@pytest.mark.parametrize("mode", ["open", "closed", "local"])
def test_redis_killed_under_uvicorn(own_redis: OwnRedis, tmp_path: Path, mode: str) -> None:
    # the same, through a served app (a separate uvicorn process with the middleware), its
    # keys in SQLite and its counters (and cache invalidations) in our own Redis
    database = f"sqlite:///{tmp_path}/keys.db"
    with KeySentry(database) as ks:
        ks.create_rate_limit_scheme("five", "Five", [{"unit": "hour", "max_requests": 5}])
        ks.create_api_auth_app("api", "API", "sk_live", rate_limit_scheme_slug="five")
        secret = ks.create_api_key("api", "k").secret
    env = {"KEYSENTRY_DATABASE_URL": database, "KEYSENTRY_LIMITER_URL": own_redis.url,
           "TEST_ON_LIMITER_ERROR": mode}  # fmt: skip
    seen: Counter[int] = Counter()
    with uvicorn(tmp_path, env) as port:
        before = [_get(port, secret) for _ in range(2)]
        assert [s for s, _ in before] == [200, 200]
        assert before[1][1]["x-ratelimit-remaining"] == "3"  # counted in Redis

        own_redis.kill()
        during = [_get(port, secret) for _ in range(6)]
        seen.update(s for s, _ in during)
        if mode == "open":
            assert [s for s, _ in during] == [200] * 6
            assert all("ratelimit" not in h for _, h in during)
        elif mode == "closed":
            assert [s for s, _ in during] == [503] * 6
            assert all(int(h["retry-after"]) >= 1 for _, h in during)
        else:  # counted in the worker, exactly, from zero
            assert [s for s, _ in during] == [200] * 5 + [429]
        assert _get(port, "sk_live_" + "0" * 38)[0] == 401  # never fails open

        own_redis.start()  # empty: it keeps nothing on disk
        back = time.monotonic()
        # until then: admitted without headers (open), 503 (closed), or 429 from the
        # worker's exhausted local counter (local)
        while (reply := _get(port, secret))[0] != 200 or "ratelimit" not in reply[1]:
            seen[reply[0]] += 1
            assert time.monotonic() - back < 2.0, "exact limiting did not resume within 2 s"
            time.sleep(0.05)
        statuses = [reply[0]] + [_get(port, secret)[0] for _ in range(5)]
        assert statuses == [200] * 5 + [429]  # counted in the new Redis from zero
    assert 500 not in seen
    print(f"\n  Redis killed under uvicorn, on_limiter_error={mode!r}: during the outage "
          f"{dict(Counter(s for s, _ in during))}; exact again {time.monotonic() - back:.2f} s "
          "after Redis came back")  # fmt: skip
