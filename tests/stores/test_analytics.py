"""Usage analytics: every verification counted once by app, key and outcome, written behind
in one upsert per batch, rolled up to hours and days, pruned by retention, queried by
``get_usage`` / ``get_top_keys`` / ``list_api_keys(unused_for=…)``; on every store."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keysentry import KeySentry, NotFoundError, StoreError, ValidationError
from keysentry.core.keys import generate_key
from keysentry.stores.usage import ADMITTED_MAX
from keysentry.testing import FakeClock
from keysentry.usage import MAX_BUCKETS, Retention, UsagePoint
from tests.stores.test_usage import record_statements

# a minute boundary, so that "the same minute" in a test is one bucket
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()


def _world(url: str, clock: FakeClock, **options: Any) -> tuple[KeySentry, dict[str, Any]]:
    ks = KeySentry(url, clock=clock, usage_interval=None, **options)
    ks.create_rate_limit_scheme(
        slug="tiny", name="Tiny", rules=[{"unit": "minute", "duration": 1, "max_requests": 3}]
    )
    ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["orders:read", "orders:write"])
    ks.create_api_auth_app("blog", "Blog", "sk_blog")
    keys = {
        "a": ks.create_api_key("shop", "a", permissions=["orders:read"]),
        "b": ks.create_api_key("shop", "b", rate_limit_scheme_slug="tiny"),
        "c": ks.create_api_key("blog", "c"),
    }
    return ks, keys


def _counts(points: list[UsagePoint], field: str = "outcome") -> dict[Any, int]:
    totals: dict[Any, int] = {}
    for point in points:
        group = getattr(point, field)
        totals[group] = totals.get(group, 0) + point.count
    return totals


def _traffic(ks: KeySentry, keys: dict[str, Any]) -> None:
    a, b, c = keys["a"].secret, keys["b"].secret, keys["c"].secret
    for _ in range(5):
        assert ks.verify(a, permissions="orders:read").allowed
    assert ks.verify(a, permissions="orders:write").reason == "permission_denied"
    for _ in range(5):  # 3 admitted, then the per-minute rule refuses
        ks.verify(b)
    assert ks.verify(c).allowed
    wrong = a[:-6] + ("A" if a[-6] != "A" else "B") + a[-5:]
    assert ks.verify(wrong).reason == "invalid_key"  # checksum fails: no lookup, no app
    # a well-formed key under the shop's prefix that no one issued
    assert ks.verify(generate_key("sk_shop").secret).reason == "invalid_key"
    ks.revoke_api_key(keys["c"].key.id)
    assert ks.verify(c).reason == "key_revoked"


def test_every_verification_counted_by_outcome_and_key(database_url: str) -> None:
    clock = FakeClock(T0)
    ks, keys = _world(database_url, clock)
    with ks:
        _traffic(ks, keys)
        shop = ks.get_usage("shop", since=timedelta(hours=1), granularity="minute")
        assert _counts(shop) == {"ok": 8, "permission_denied": 1, "rate_limited": 2,
                                 "invalid_key": 1}  # fmt: skip
        assert {p.start for p in shop} == {datetime.fromtimestamp(T0, UTC)}
        by_key = _counts(ks.get_usage("shop", group_by="key", granularity="minute"), "key_id")
        # the unknown key's refusal is the shop's (its prefix), with no key
        assert by_key == {keys["a"].key.id: 6, keys["b"].key.id: 5, None: 1}
        blog = ks.get_usage("blog", granularity="day")
        assert _counts(blog) == {"ok": 1, "key_revoked": 1}
        one = ks.get_usage(key_id=keys["b"].key.id, granularity="hour")
        assert _counts(one) == {"ok": 3, "rate_limited": 2}
        assert {p.key_id for p in one} == {keys["b"].key.id}


def test_minutes_roll_up_into_hours_and_days(database_url: str) -> None:
    clock = FakeClock(T0)
    ks, keys = _world(database_url, clock)
    with ks:
        secret = keys["a"].secret
        for step in range(4):  # 4 minutes, two of them in the next hour
            clock.now = T0 + 60 * 29 * step
            ks.verify(secret)
            ks.usage.flush()  # a write per minute: the database adds them up
        clock.now = T0 + 3 * 3600
        minutes = ks.get_usage("shop", since=timedelta(hours=4), granularity="minute")
        assert [p.count for p in minutes] == [1, 1, 1, 1]
        hours = ks.get_usage("shop", since=timedelta(hours=4), granularity="hour")
        assert [(p.start.hour, p.count) for p in hours] == [(12, 3), (13, 1)]
        days = ks.get_usage("shop", since=timedelta(days=2), granularity="day")
        assert [p.count for p in days] == [4]


def test_one_upsert_per_batch_whatever_the_traffic(tmp_path: Any) -> None:
    clock = FakeClock(T0)
    ks, keys = _world(f"sqlite:///{tmp_path}/k.db", clock)
    statements = record_statements(ks)
    with ks:
        for _ in range(300):
            ks.verify(keys["a"].secret)
            ks.verify(keys["c"].secret, permissions="nope")
        assert not [s for s in statements if "keysentry_usage" in s]  # nothing per request
        assert ks.usage.pending_counts() == 2
        ks.usage.flush()
        writes = [s for s in statements if "INSERT INTO keysentry_usage" in s]
        assert len(writes) == 1
        assert "ON CONFLICT" in writes[0]
        assert _counts(ks.get_usage("shop", granularity="minute")) == {"ok": 300}


def test_a_failed_write_keeps_the_counts(tmp_path: Any, caplog: Any) -> None:
    clock = FakeClock(T0)
    ks, keys = _world(f"sqlite:///{tmp_path}/k.db", clock)
    with ks:
        real = ks.store.add_usage

        def down(buckets: Any) -> None:
            raise StoreError("sqlite store failed: disk I/O error")

        ks.store.add_usage = down  # type: ignore[method-assign]
        ks.verify(keys["a"].secret)
        ks.usage.flush()
        assert "could not write 1 usage counts (will retry)" in caplog.text
        ks.verify(keys["a"].secret)
        ks.store.add_usage = real  # type: ignore[method-assign]
        assert _counts(ks.get_usage("shop", granularity="minute")) == {"ok": 2}


def test_admitted_requests_count_across_flushes_and_minutes() -> None:
    # an admitted request finds its key's count of the minute by the key's id alone: a
    # count taken by a flush, or of a minute gone by, must never be added to again
    clock = FakeClock(T0)
    ks, keys = _world("memory://", clock)
    with ks:
        secret = keys["a"].secret
        for _ in range(3):
            assert ks.verify(secret).allowed
        ks.usage.flush()
        for _ in range(2):  # after the flush: a new count, not the one written
            assert ks.verify(secret).allowed
        clock.now = T0 + 60
        for _ in range(4):  # the next minute: its own count
            assert ks.verify(secret).allowed
        ks.usage.flush()
        minutes = ks.get_usage("shop", since=timedelta(hours=1), granularity="minute")
        assert [(p.start.timestamp() - T0, p.count) for p in minutes] == [(0, 5), (60, 4)]


def test_an_admitted_request_counts_in_the_minute_its_time_falls_in() -> None:
    # the key's count of the minute is found by the minute's start and end: the last instant
    # of a minute counts in it, its end in the next, and a clock set back in its own minute
    clock = FakeClock(T0 + 59.999)
    ks, keys = _world("memory://", clock)
    with ks:
        secret = keys["a"].secret  # no rate limit: every request admitted
        assert ks.verify(secret).allowed
        clock.now = T0 + 60
        assert ks.verify(secret).allowed
        assert ks.verify(secret).allowed
        clock.now = T0 + 30
        assert ks.verify(secret).allowed
        ks.usage.flush()
        clock.now = T0 + 120  # both minutes gone by, for the query
        minutes = ks.get_usage("shop", since=timedelta(hours=1), granularity="minute")
        assert [(p.start.timestamp() - T0, p.count) for p in minutes] == [(0, 2), (60, 2)]


def _verify_in_threads(
    ks: KeySentry, secret: str, each: int, clock: FakeClock | None = None
) -> None:
    """Four threads verify *secret* *each* times while another writes usage in a loop and,
    given *clock*, another moves it on by 7 s every 2 ms; returns when the four are done."""
    done = threading.Event()

    def verify() -> None:
        for _ in range(each):
            assert ks.verify(secret).allowed

    def flush() -> None:
        while not done.is_set():
            ks.usage.flush()

    def tick(clock: FakeClock) -> None:
        while not done.is_set():
            clock.now += 7
            done.wait(0.002)

    helpers = [threading.Thread(target=flush)]
    if clock is not None:
        helpers.append(threading.Thread(target=tick, args=(clock,)))
    workers = [threading.Thread(target=verify) for _ in range(4)]
    for thread in helpers + workers:
        thread.start()
    for worker in workers:
        worker.join()
    done.set()
    for helper in helpers:
        helper.join()


def test_admitted_requests_are_all_counted_while_flushes_run() -> None:
    clock = FakeClock(T0)
    ks, keys = _world("memory://", clock)
    with ks:
        _verify_in_threads(ks, keys["a"].secret, 400)
        ks.usage.flush()
        assert _counts(ks.get_usage("shop", granularity="minute")) == {"ok": 1600}


def test_a_busy_key_is_counted_exactly_and_its_list_stays_bounded() -> None:
    # admitted requests are appended to the key's list of the minute; a full list is folded
    # into its count by note(), so the list never holds more than ADMITTED_MAX times
    clock = FakeClock(T0)
    ks, keys = _world("memory://", clock)
    with ks:
        secret, key_id = keys["a"].secret, keys["a"].key.id
        longest = 0
        for _ in range(3 * ADMITTED_MAX + 5):
            assert ks.verify(secret).allowed
            longest = max(longest, len(ks.usage.admitted[key_id][2]))
        assert longest == ADMITTED_MAX
        assert ks.usage.pending_counts() == 1  # one count: (shop, a, ok, this minute)
        ks.usage.flush()
        assert _counts(ks.get_usage("shop", granularity="minute")) == {"ok": 3 * ADMITTED_MAX + 5}


def test_an_append_to_a_list_just_replaced_is_counted_in_its_own_minute() -> None:
    # a thread that found its key's list, then paused while another moved the key to the
    # next minute, appends to the replaced list: the next write counts it, in its minute
    clock = FakeClock(T0 + 30)
    ks, keys = _world("memory://", clock)
    with ks:
        secret, key_id = keys["a"].secret, keys["a"].key.id
        assert ks.verify(secret).allowed
        start, end, times, _ = ks.usage.admitted[key_id]
        assert (start, end) == (T0, T0 + 60)
        clock.now = T0 + 60
        assert ks.verify(secret).allowed  # the next minute: a new list
        assert ks.usage.admitted[key_id][2] is not times
        times.append(T0 + 59.5)  # the paused thread's append, as the verifier makes it
        ks.usage.flush()
        times.append(T0 + 59.9)  # later still: kept through one more write
        ks.usage.flush()
        clock.now = T0 + 120
        minutes = ks.get_usage("shop", since=timedelta(hours=1), granularity="minute")
        assert [(p.start.timestamp() - T0, p.count) for p in minutes] == [(0, 3), (60, 1)]
        assert ks.get_api_key(key_id).last_used_at == datetime.fromtimestamp(T0 + 60, UTC)


def test_admitted_requests_are_all_counted_while_minutes_pass_and_flushes_run() -> None:
    # lists are replaced as minutes pass and folded by writes while threads append to them:
    # however the threads interleave (a short switch interval makes them do it often), each
    # admitted request is counted once, in its minute
    clock = FakeClock(T0)
    ks, keys = _world("memory://", clock)
    secret = keys["c"].secret  # no permissions asked, no rate limit: every request admitted
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with ks:
            _verify_in_threads(ks, secret, 1500, clock)
            ks.usage.flush()
            clock.now += 3600
            points = ks.get_usage("blog", since=timedelta(days=1), granularity="minute")
            assert sum(p.count for p in points) == 6000
            assert ks.usage.dropped == 0
    finally:
        sys.setswitchinterval(interval)


def test_a_write_keeps_an_append_that_lands_while_it_folds_the_list() -> None:
    # the verifier appends without the lock: an append can land after a write has read a
    # key's list and before it empties it. A list that appends once when read stands in
    # for that thread.
    clock = FakeClock(T0)
    ks, keys = _world("memory://", clock)
    with ks:
        secret, key_id = keys["a"].secret, keys["a"].key.id
        assert ks.verify(secret).allowed
        start, end, times, count = ks.usage.admitted[key_id]

        class Racing(list[float]):
            raced = False

            def __getitem__(self, index: Any) -> Any:
                items = super().__getitem__(index)
                if isinstance(index, slice) and not self.raced:
                    self.raced = True
                    self.append(T0 + 2.0)  # the other thread's append
                return items

        ks.usage.admitted[key_id] = (start, end, Racing(times), count)
        assert ks.verify(secret).allowed
        ks.usage.flush()  # takes two times; the third, appended meanwhile, stays
        assert len(ks.usage.admitted[key_id][2]) == 1
        ks.usage.flush()
        assert _counts(ks.get_usage("shop", granularity="minute")) == {"ok": 3}


def test_memory_is_bounded() -> None:
    clock = FakeClock(T0)
    ks, keys = _world("memory://", clock)
    with ks:
        ks.usage.max_pending = 2
        for minute in range(5):  # a distinct count per minute
            clock.now = T0 + 60 * minute
            ks.verify(keys["a"].secret)
        assert ks.usage.pending_counts() == 2
        assert ks.usage.dropped == 3
        clock.now = T0 + 600
        assert sum(p.count for p in ks.get_usage("shop", granularity="minute")) == 2


def test_an_admitted_count_keeps_its_place_within_the_bound() -> None:
    # a key's list of the minute holds its count's place: refusals that come after it do not
    # take that place, and the write counts every admitted request
    clock = FakeClock(T0)
    ks, keys = _world("memory://", clock)
    with ks:
        ks.usage.max_pending = 2
        for _ in range(3):
            assert ks.verify(keys["a"].secret).allowed
        assert ks.verify(keys["a"].secret, permissions="orders:write").reason == "permission_denied"
        assert not ks.verify(keys["c"].secret, permissions="nope").allowed  # no place left
        assert ks.usage.dropped == 1
        ks.usage.flush()
        assert _counts(ks.get_usage("shop", granularity="minute")) == {
            "ok": 3,
            "permission_denied": 1,
        }
        assert ks.get_usage("blog", granularity="minute") == []


def test_analytics_off_counts_nothing_but_last_use() -> None:
    clock = FakeClock(T0)
    ks, keys = _world("memory://", clock, analytics=False)
    with ks:
        ks.verify(keys["a"].secret)
        assert ks.usage.pending_counts() == 0
        assert ks.get_usage("shop") == []
        ks.usage.flush()
        assert ks.get_api_key(keys["a"].key.id).last_used_at is not None


def test_prefix_shared_by_two_apps_is_counted_for_neither() -> None:
    clock = FakeClock(T0)
    ks, _ = _world("memory://", clock)
    with ks:
        ks.create_api_auth_app("shop2", "Shop 2", "sk_shop")
        issued = ks.create_api_key("shop2", "x")
        ks.delete_api_auth_app("shop2")  # its keys are unknown now; the prefix is one app's
        assert ks.verify(issued.secret).reason in ("invalid_key", "app_disabled")
        ks.create_api_auth_app("shop3", "Shop 3", "sk_shop")
        fake = issued.secret[:-8] + "abcdefgh"
        ks.verify(fake)
        assert "invalid_key" not in _counts(ks.get_usage("shop", granularity="minute"))
        assert ks.get_usage("shop3", granularity="minute") == []


def test_retention_prunes_buckets_and_events(database_url: str) -> None:
    clock = FakeClock(T0)
    ks, keys = _world(
        database_url, clock, retention=Retention(minute=timedelta(hours=2),
                                                 hour=timedelta(days=2), events=timedelta(days=1)),
    )  # fmt: skip
    with ks:
        ks.verify(keys["a"].secret)
        ks.usage.flush()
        events = len(ks.list_events())
        assert events > 1
        clock.advance(3 * 3600)
        ks.usage.prune()
        with pytest.raises(ValidationError, match="since: minute buckets are kept for 2 hours"):
            ks.get_usage("shop", since=timedelta(hours=4), granularity="minute")
        assert ks.get_usage("shop", since=timedelta(hours=2), granularity="minute") == []
        assert _counts(ks.get_usage("shop", since=timedelta(hours=4))) == {"ok": 1}
        clock.advance(3 * 86400)
        ks.usage.prune()
        assert ks.get_usage("shop", since=timedelta(days=2), granularity="hour") == []
        assert _counts(ks.get_usage("shop", since=timedelta(days=4), granularity="day")) == {
            "ok": 1
        }
        # old events went, the newest stays (the change feed's position), and new changes
        # still reach the cache
        left = ks.list_events()
        assert len(left) == 1
        ks.revoke_api_key(keys["a"].key.id)
        assert ks.list_events()[-1].seq > left[0].seq
        assert ks.verify(keys["a"].secret).reason == "key_revoked"


def test_the_writer_prunes_by_itself(tmp_path: Any) -> None:
    clock = FakeClock(T0)
    ks = KeySentry(f"sqlite:///{tmp_path}/k.db", clock=clock, usage_interval=0.05)
    with ks:
        ks.create_api_auth_app("shop", "Shop", "sk_shop")
        ks.store.add_usage({("shop", "", "ok", 60, int(T0) - 30 * 86400): 1})
        secret = ks.create_api_key("shop", "a").secret
        ks.verify(secret)  # starts the writer thread, which prunes at once
        ks.close()
        rows = ks.store.read_usage(  # type: ignore[attr-defined]
            ks.usage_query("shop", None, timedelta(days=7), None, "minute", "outcome")
        )
        assert [r[2] for r in rows] == [1]  # the old bucket went, today's stayed


def test_stale_keys(database_url: str) -> None:
    clock = FakeClock(T0)
    ks, keys = _world(database_url, clock)
    with ks:
        ks.verify(keys["a"].secret)
        clock.advance(40 * 86400)
        ks.verify(keys["b"].secret)
        stale = ks.list_api_keys("shop", unused_for=timedelta(days=30))
        # "a" was last used 40 days ago, "b" just now
        names = sorted(k.name for k in stale)
        assert names == ["a"]
        fresh = ks.create_api_key("shop", "new")
        assert fresh.key.id in {k.id for k in ks.list_api_keys("shop", unused_for=timedelta(1))}
        with pytest.raises(ValidationError, match="unused_for"):
            ks.list_api_keys("shop", unused_for=timedelta(0))
        with pytest.raises(ValidationError, match="unused_for"):
            ks.list_api_keys("shop", unused_for=30)  # type: ignore[arg-type]


def test_top_keys(database_url: str) -> None:
    clock = FakeClock(T0)
    ks, keys = _world(database_url, clock)
    with ks:
        _traffic(ks, keys)
        top = ks.get_top_keys("shop")
        assert [(t.key_id, t.requests, t.refused) for t in top] == [
            (keys["a"].key.id, 6, 1),
            (keys["b"].key.id, 5, 2),
        ]
        refused = ks.get_top_keys("shop", by="refused", limit=1)
        assert [t.key_id for t in refused] == [keys["b"].key.id]
        # ninety days back reads day buckets: the same totals
        assert ks.get_top_keys("shop", since=timedelta(days=90)) == top


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"granularity": "week"}, "granularity"),
        ({"group_by": "path"}, "group_by"),
        ({"since": datetime(2030, 1, 1, tzinfo=UTC)}, "since"),  # after until
        ({"since": datetime(2026, 1, 1)}, "since"),  # noqa: DTZ001  (naive, on purpose)
        ({"since": "yesterday"}, "since"),
        ({"until": 5}, "until"),
        ({"since": timedelta(0)}, "since"),
        ({"since": timedelta(days=9), "granularity": "minute"}, "since"),  # too many buckets
        ({"since": timedelta(days=100), "granularity": "hour"}, "since"),  # beyond retention
        ({"app_slug": None}, "app_slug"),
        ({"key_id": "x\x00"}, "key_id"),
        ({"app_slug": "blog", "key_id": "KEY_A"}, "key_id"),  # another app's key
    ],
)
def test_bad_queries_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    clock = FakeClock(T0)
    ks, keys = _world("memory://", clock)
    with ks:
        kwargs = {"app_slug": "shop", **kwargs}
        if kwargs.get("key_id") == "KEY_A":
            kwargs["key_id"] = keys["a"].key.id
        with pytest.raises(ValidationError) as caught:
            ks.get_usage(**kwargs)
        assert [e.field for e in caught.value.errors] == [field]


def test_unknown_app_or_key_is_not_found() -> None:
    ks, _ = _world("memory://", FakeClock(T0))
    with ks:
        with pytest.raises(NotFoundError):
            ks.get_usage("nope")
        with pytest.raises(NotFoundError):
            ks.get_usage(key_id="key_nope")
        with pytest.raises(NotFoundError):
            ks.get_top_keys("nope")


def test_the_bucket_cap_is_eight_days_of_minutes() -> None:
    kept = Retention(minute=timedelta(days=30), hour=timedelta(days=90))
    ks, _ = _world("memory://", FakeClock(T0), retention=kept)
    with ks:
        most = timedelta(minutes=MAX_BUCKETS - 1)  # and the current minute
        assert ks.get_usage("shop", since=most, granularity="minute") == []
        with pytest.raises(ValidationError, match="11521 minute buckets, more than the 11520"):
            ks.get_usage("shop", since=most + timedelta(minutes=1), granularity="minute")
        # the default retention: a week of minutes, with a minute's slack
        ks.usage.retention = Retention()
        assert ks.get_usage("shop", since=timedelta(days=7), granularity="minute") == []


@pytest.mark.parametrize(
    "bad",
    [
        {"minute": timedelta(minutes=5)},
        {"hour": timedelta(days=1), "minute": timedelta(days=2)},
        {"day": timedelta(days=1)},
        {"events": timedelta(0)},
        {"weeks": timedelta(days=1)},
    ],
)
def test_retention_is_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"minute|hour|day|events|weeks"):
        Retention(**bad)


def test_a_deleted_app_takes_its_usage_and_a_new_app_of_its_slug_starts_empty(
    database_url: str,
) -> None:
    clock = FakeClock(T0)
    ks, keys = _world(database_url, clock)
    with ks:
        _traffic(ks, keys)
        assert ks.get_usage("blog", granularity="day")  # counted and written
        ks.delete_api_auth_app("blog")
        with pytest.raises(NotFoundError):
            ks.get_usage("blog")
        assert not ks.verify(keys["c"].secret).allowed  # a refusal counted after the delete
        ks.create_api_auth_app("blog", "Blog again", "sk_blog2")
        for granularity in ("minute", "hour", "day"):
            assert ks.get_usage("blog", granularity=granularity) == []
        assert _counts(ks.get_usage("shop", granularity="day"))["ok"] == 8  # untouched
