"""Credits: a key that may make N more requests, refilled daily or monthly; spent atomically
with the rate limits (a rate-limited request spends nothing, a request out of credits counts
against no rate limit), never overspent by threads or processes, kept in the store."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from keysentry import KeySentry, ValidationError
from keysentry.limiters import Limiter, MemoryLimiter
from keysentry.testing import FakeClock
from tests.conftest import REDIS_URL

T0 = datetime(2027, 3, 14, 15, 0, tzinfo=UTC).timestamp()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limiter(request: pytest.FixtureRequest) -> Iterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimiter()
        return
    from keysentry.limiters.redis import RedisLimiter

    shared = RedisLimiter(REDIS_URL, key_prefix=request.getfixturevalue("redis_prefix"),
                          redis_time=False, timeout=10, on_error="closed")  # fmt: skip
    yield shared
    shared.close()


def _ks(url: str = "memory://", **options: Any) -> KeySentry:
    options.setdefault("clock", FakeClock(T0))
    ks = KeySentry(url, usage_interval=None, **options)
    ks.create_rate_limit_scheme(slug="three", name="Three", rules=[
        {"unit": "minute", "max_requests": 3}])  # fmt: skip
    ks.create_api_auth_app("shop", "Shop", "sk_shop")
    return ks


def test_a_key_spends_its_credits_then_gets_429(database_url: str) -> None:
    with _ks(database_url) as ks:
        issued = ks.create_api_key("shop", "metered", credits=5)
        assert issued.key.credits == 5
        first = ks.verify(issued.secret)
        assert first.allowed
        assert first.identity is not None
        assert first.identity.credits_remaining == 4
        assert ("x-credits-remaining", "4") in first.headers
        assert [ks.verify(issued.secret).allowed for _ in range(5)] == [True] * 4 + [False]
        out = ks.verify(issued.secret)
        assert (out.reason, out.status) == ("usage_exceeded", 429)
        assert not any(name == "retry-after" for name, _ in out.headers)  # no refill coming
        assert ks.verify(issued.secret, cost=0).allowed  # verifies without spending
        unlimited = ks.create_api_key("shop", "free")
        plain = ks.verify(unlimited.secret)
        assert plain.identity is not None
        assert plain.identity.credits_remaining is None
        assert plain.headers == ()


def test_costs_and_their_checks() -> None:
    with _ks() as ks:
        secret = ks.create_api_key("shop", "k", credits=10).secret
        assert [ks.verify(secret, cost=4).allowed for _ in range(3)] == [True, True, False]
        assert ks.verify(secret, cost=2).allowed  # the 2 left
        for bad in (-1, 1.5, True, "1", 10**16):
            with pytest.raises(ValidationError) as caught:
                ks.verify(secret, cost=bad)  # type: ignore[arg-type]
            assert caught.value.errors[0].field == "cost"


def test_rate_limits_and_credits_are_one_decision(limiter: Limiter) -> None:
    clock = FakeClock(T0)
    with _ks(limiter=limiter, clock=clock) as ks:
        issued = ks.create_api_key("shop", "k", credits=5, rate_limit_scheme_slug="three")
        # three a minute: the fourth is rate limited and spends nothing
        verdicts = [ks.verify(issued.secret) for _ in range(4)]
        assert [v.allowed for v in verdicts] == [True, True, True, False]
        assert verdicts[3].reason == "rate_limited"
        assert verdicts[3].identity is not None
        assert verdicts[3].identity.credits_remaining == 2
        clock.now += 120  # the sliding window forgets the first minute
        assert [ks.verify(issued.secret).allowed for _ in range(2)] == [True, True]  # credits 0
        out = ks.verify(issued.secret)
        assert out.reason == "usage_exceeded"
        # that refusal counted against no rule: another key of the same scheme is unaffected,
        # and this key's minute shows 2 used, not 3
        assert ks.update_credits(issued.key.id, set=1).credits == 1
        again = ks.verify(issued.secret)
        assert again.allowed
        assert again.rate_limits[0].remaining == 0  # 3 counted: 2 before, this one


def test_daily_refill_sets_the_balance(database_url: str) -> None:
    clock = FakeClock(T0)
    with _ks(database_url, clock=clock) as ks:
        issued = ks.create_api_key("shop", "daily", credits=2,
                                   refill={"interval": "daily", "amount": 3})  # fmt: skip
        assert [ks.verify(issued.secret).allowed for _ in range(3)] == [True, True, False]
        out = ks.verify(issued.secret)
        midnight = datetime(2027, 3, 15, tzinfo=UTC).timestamp()
        assert dict(out.headers)["retry-after"] == str(int(midnight - T0))
        clock.now = midnight
        # set to 3, not 3 more: four requests, three admitted
        assert [ks.verify(issued.secret).allowed for _ in range(4)] == [True] * 3 + [False]


def test_monthly_refill_on_its_day() -> None:
    clock = FakeClock(T0)  # 14 March
    with _ks(clock=clock) as ks:
        issued = ks.create_api_key(
            "shop", "monthly", refill={"interval": "monthly", "amount": 2, "refill_day": 20}
        )
        assert issued.key.credits == 2  # the amount, until the first refill
        assert [ks.verify(issued.secret).allowed for _ in range(3)] == [True, True, False]
        clock.now = datetime(2027, 3, 19, 23, 59, tzinfo=UTC).timestamp()
        assert not ks.verify(issued.secret).allowed
        clock.now = datetime(2027, 3, 20, tzinfo=UTC).timestamp()
        assert [ks.verify(issued.secret).allowed for _ in range(3)] == [True, True, False]


def test_updates_reach_a_running_worker(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/credits.db"
    clock = FakeClock(T0)
    with _ks(url, clock=clock, sync_interval=0.0) as worker, KeySentry(url) as admin:
        issued = worker.create_api_key("shop", "k", credits=1)
        assert worker.verify(issued.secret).allowed
        assert not worker.verify(issued.secret).allowed
        assert admin.update_credits(issued.key.id, increment=2).credits == 2
        assert [worker.verify(issued.secret).allowed for _ in range(3)] == [True, True, False]
        admin.update_credits(issued.key.id, set=5)
        assert sum(worker.verify(issued.secret).allowed for _ in range(7)) == 5
        admin.update_credits(issued.key.id, set=10)
        admin.update_credits(issued.key.id, decrement=4)
        assert sum(worker.verify(issued.secret).allowed for _ in range(12)) == 6
        kinds = [e.kind for e in admin.list_events() if e.key_id == issued.key.id]
        assert kinds.count("key.credits_updated") == 4


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"credits": -1}, "credits"),
        ({"credits": 1.5}, "credits"),
        ({"credits": "10"}, "credits"),
        ({"credits": True}, "credits"),
        ({"refill": {"amount": 10}}, "refill.interval"),
        ({"refill": {"interval": "weekly", "amount": 10}}, "refill.interval"),
        ({"refill": {"interval": "monthly", "amount": 0}}, "refill.amount"),
        ({"refill": {"interval": "monthly", "amount": 5, "refill_day": 29}}, "refill.refill_day"),
        ({"refill": {"interval": "monthly", "amount": 5, "refill_day": 0}}, "refill.refill_day"),
        ({"refill": {"interval": "daily", "amount": 5, "refill_day": 3}}, "refill.refill_day"),
    ],
)
def test_bad_credits_are_field_errors(kwargs: dict[str, Any], field: str) -> None:
    with _ks() as ks:
        with pytest.raises(ValidationError) as caught:
            ks.create_api_key("shop", "k", **kwargs)
        assert [e.field for e in caught.value.errors] == [field]
        assert ks.list_api_keys("shop") == []


def test_bad_updates_are_field_errors() -> None:
    with _ks() as ks:
        limited = ks.create_api_key("shop", "k", credits=3).key.id
        free = ks.create_api_key("shop", "free").key.id
        for kwargs, field in (({}, "set"), ({"set": 1, "increment": 1}, "set"),
                              ({"set": -1}, "set"), ({"increment": 1.5}, "increment"),
                              ({"decrement": True}, "decrement")):  # fmt: skip
            with pytest.raises(ValidationError) as caught:
                ks.update_credits(limited, **kwargs)
            assert caught.value.errors[0].field == field
        with pytest.raises(ValidationError) as caught:
            ks.update_credits(free, increment=5)
        assert "use set" in caught.value.errors[0].message
        assert ks.get_api_key(limited).credits == 3
        assert ks.update_credits(free, set=7).credits == 7  # a limit from now on


def test_threads_never_overspend(database_url: str) -> None:
    with _ks(database_url, clock=FakeClock(T0)) as ks:
        secret = ks.create_api_key("shop", "k", credits=500).secret
        with ThreadPoolExecutor(16) as pool:
            verdicts = list(pool.map(lambda _: ks.verify(secret).allowed, range(800)))
        assert sum(verdicts) == 500


def test_unspent_leases_go_back_to_the_store(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/credits.db"
    with _ks(url) as ks:
        issued = ks.create_api_key("shop", "k", credits=500)
        assert ks.verify(issued.secret).allowed  # leases 50, spends 1
        assert ks.get_api_key(issued.key.id).credits == 450
    with KeySentry(url) as again:
        assert again.get_api_key(issued.key.id).credits == 499


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
    with context.Pool(4) as pool:
        counts = pool.starmap(_spend_in_process, [(pg_url, REDIS_URL, issued.secret, 16)] * 4)
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
