"""Processes sharing one store or one Redis: the counts, balances and limits of every
process add up exactly (spawned and forked workers, started by the tests themselves)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from keysentry import KeySentry
from keysentry.core.ratelimit import compile_limits
from keysentry.limiters.redis import RedisLimiter
from keysentry.models import RateLimitRule
from keysentry.testing import FakeClock
from tests.conftest import REDIS_URL
from tests.stores.test_analytics import T0, _counts, _world
from tests.test_credits import _ks

# ------------------------------------------------------------ from tests/test_credits.py


def _spend_in_process(url: str, limiter_url: str | None, secret: str, threads: int) -> int:
    with (KeySentry(url, limiter_url=limiter_url, usage_interval=None) as ks,
          ThreadPoolExecutor(threads) as pool):  # fmt: skip
        admitted = 0
        while True:  # until every thread was refused: this process's leases are spent
            verdicts = list(pool.map(lambda _: ks.verify(secret).allowed, range(threads)))
            admitted += sum(verdicts)
            if not any(verdicts):
                return admitted


@pytest.mark.postgres
@pytest.mark.redis
def test_processes_on_redis_spend_exactly_the_balance(pg_url: str) -> None:
    with KeySentry(pg_url, usage_interval=None) as ks:
        ks.create_rate_limit_scheme(slug="wide", name="Wide", rules=[
            {"unit": "minute", "max_requests": 100_000}])  # fmt: skip
        ks.create_api_auth_app("shop", "Shop", "sk_shop", rate_limit_scheme_slug="wide")
        issued = ks.create_api_key("shop", "k", credits=500)
    context = multiprocessing.get_context("spawn")
    # close and join, not the context manager's terminate(): killing a pool worker that holds
    # the task queue's lock leaves another blocked on it for ever (seen once in this test)
    pool = context.Pool(4)
    try:
        counts = pool.starmap(_spend_in_process, [(pg_url, REDIS_URL, issued.secret, 16)] * 4)
    finally:
        pool.close()
        pool.join()
    assert sum(counts) == 500
    with KeySentry(pg_url) as ks:
        assert ks.get_api_key(issued.key.id).credits == 0  # every lease spent, none lost


def _spend_one_then_crash(url: str, secret: str) -> None:
    import os

    ks = KeySentry(url, usage_interval=None)
    assert ks.verify(secret).allowed  # takes a lease of 50, spends 1
    os._exit(0)  # no close(): the lease is never given back


def test_a_crash_loses_at_most_its_lease_and_never_gives_credits_back(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/credits.db"
    with _ks(url) as ks:
        issued = ks.create_api_key("shop", "k", credits=500)
    crashed = multiprocessing.get_context("spawn").Process(
        target=_spend_one_then_crash, args=(url, issued.secret)
    )
    crashed.start()
    crashed.join(60)
    assert crashed.exitcode == 0
    with KeySentry(url, usage_interval=None) as ks:
        assert ks.get_api_key(issued.key.id).credits == 450  # the lease went with the process
        admitted = sum(ks.verify(issued.secret).allowed for _ in range(500))
    assert admitted == 450  # 1 + 450 spent of 500: 49 lost, none spent twice


# ------------------------------------------------------------ from tests/stores/test_analytics.py


def _worker(url: str, secret: str, n: int) -> None:
    ks = KeySentry(url, usage_interval=None, clock=lambda: T0 + 30)
    for _ in range(n):
        assert ks.verify(secret).allowed
    ks.close()  # a clean shutdown writes what is pending


@pytest.mark.parametrize("n_processes", [3])
def test_processes_add_up_in_the_same_buckets(sql_url: str, n_processes: int) -> None:
    clock = FakeClock(T0)
    ks, keys = _world(sql_url, clock)
    with ks:
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(target=_worker, args=(sql_url, keys["a"].secret, 50 + i))
            for i in range(n_processes)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0
        clock.advance(60)
        for granularity in ("minute", "hour", "day"):
            points = ks.get_usage("shop", granularity=granularity, since=timedelta(days=1))
            assert _counts(points) == {"ok": 50 + 51 + 52}, granularity


# ------------------------------------------------------------ from tests/limiters/test_redis.py


def _hammer(prefix: str, seconds: float, threads: int, out: Any) -> None:
    """One process: *threads* threads hitting one per_app rule of 100/second (fixed
    window, so that a busy window admits exactly 100) for *seconds*."""
    limiter = RedisLimiter(REDIS_URL, key_prefix=prefix, timeout=2.0)
    lim = compile_limits([RateLimitRule(unit="second", max_requests=100, mode="per_app")],
                         "fixed_window")[0]  # fmt: skip
    checks = [(lim, "{hammer}:per_app|hammer")]
    keys, args = limiter._arguments(checks, 0)
    admitted: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def work() -> None:
        while time.monotonic() < deadline:
            now, ok, *_ = map(int, limiter.eval(keys, args).split())
            if ok:
                with lock:
                    admitted[int(now) // 1000] += 1

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    limiter.close()
    out.put(dict(admitted))


@pytest.mark.redis
def test_8_processes_x_25_threads_admit_exactly_100_per_window(redis_prefix: str) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_hammer, args=(redis_prefix, 3.5, 25, results))
               for _ in range(8)]  # fmt: skip
    for worker in workers:
        worker.start()
    per_window: Counter[int] = Counter()
    for _ in workers:
        per_window.update(results.get(timeout=120))
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    windows = sorted(per_window)
    assert max(per_window.values()) == 100, per_window  # never 101
    # windows the 200 threads kept busy from start to end admitted exactly the limit
    full = windows[1:-1]
    assert len(full) >= 2, per_window
    assert [per_window[w] for w in full] == [100] * len(full), per_window


def _hit_in_child(limiter: RedisLimiter, checks: Any, out: Any) -> None:
    out.put((len(limiter._idle), limiter.hit(checks, 0)[1][0].remaining, limiter.available))
    limiter.close()


@pytest.mark.redis
def test_a_forked_child_opens_connections_of_its_own(redis_prefix: str) -> None:
    # a server that imports the app and then forks its workers must not have them talk on
    # the parent's connections (their replies would cross)
    limiter = RedisLimiter(REDIS_URL, key_prefix=redis_prefix, on_error="closed")
    (lim,) = compile_limits([RateLimitRule(unit="minute", max_requests=100)])
    checks = [(lim, "{app}:fork")]
    try:
        assert limiter.hit(checks, 0)[1][0].remaining == 99
        assert len(limiter._idle) == 1
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_hit_in_child, args=(limiter, checks, results))
        child.start()
        idle_in_child, remaining, available = results.get(timeout=60)
        child.join(timeout=30)
        assert child.exitcode == 0
        assert idle_in_child == 0  # the parent's connection was forgotten, not used
        assert (remaining, available) == (98, True)
        # the parent's connection is untouched by the child
        assert limiter.hit(checks, 0)[1][0].remaining == 97
        assert limiter.available
    finally:
        limiter.close()
