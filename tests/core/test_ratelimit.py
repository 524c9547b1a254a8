"""Rate-limit arithmetic against an independent model, and its edge cases."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysentry.core.headers import ALLOWED_HEADER_NAMES, allowed_header_bytes, rate_headers
from keysentry.core.ratelimit import (
    Counter,
    Limit,
    Outcome,
    compile_limits,
    evaluate,
    window,
)
from keysentry.limiters import Limiter
from keysentry.limiters.memory import MemoryLimiter
from keysentry.models import RateLimitRule


def limit(max_requests: int, window_ms: int, sliding: bool, name: str = "r") -> Limit:
    return Limit(name, max_requests, window_ms, None, "per_key", (), 0, sliding)


class Reference:
    """The obvious model: every admitted request's time, counted afresh each time, with
    exact fractions. Shares no code with the limiter but the definition of a window."""

    def __init__(self) -> None:
        self.admitted: dict[str, list[int]] = {}

    def estimate(self, lim: Limit, key: str, now: int) -> Fraction:
        start, length = window(lim, now)
        times = self.admitted.get(key, [])
        current = sum(start <= t <= now for t in times)
        previous = sum(start - length <= t < start for t in times)
        weight = Fraction(length - (now - start), length) if lim.sliding else Fraction(0)
        return current + previous * weight

    def hit(self, checks: list[tuple[Limit, str]], now: int) -> tuple[bool, list[int]]:
        allowed = all(self.estimate(lim, k, now) + 1 <= lim.max_requests for lim, k in checks)
        if allowed:
            for _, key in checks:
                self.admitted.setdefault(key, []).append(now)
        # what is left after this request: counted if admitted, else not at all
        remaining = [
            max(0, int(lim.max_requests - self.estimate(lim, k, now))) for lim, k in checks
        ]
        return allowed, remaining


rules_st = st.lists(
    st.tuples(st.integers(1, 5), st.integers(1, 60), st.booleans(),
              st.sampled_from(["per_key", "per_app"])),
    min_size=1, max_size=3,
)  # fmt: skip
timeline_st = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 1)), min_size=1, max_size=80)


@settings(max_examples=400)
@given(rules_st, timeline_st)
def test_memory_limiter_agrees_with_the_reference_model(
    rules: list[tuple[int, int, bool, str]], timeline: list[tuple[int, int]]
) -> None:
    agrees_with_the_model(MemoryLimiter(), rules, timeline)


def agrees_with_the_model(
    ours: Limiter,
    rules: list[tuple[int, int, bool, str]],
    timeline: list[tuple[int, int]],
    tag: str = "",
) -> None:
    """Play *timeline* (``(ms since the last request, client)``) against *ours* and the
    model; *tag* starts every counter name."""
    limits = [limit(m, w, s, name=f"r{i}") for i, (m, w, s, _) in enumerate(rules)]
    model = Reference()
    now = 1_000
    for step, client in timeline:
        now += step
        checks = [
            (lim, f"{tag}{lim.name}|{'app' if mode == 'per_app' else client}")
            for lim, (_, _, _, mode) in zip(limits, rules, strict=True)
        ]
        allowed, outcomes = ours.hit(checks, now)
        expected, remaining = model.hit(checks, now)
        assert allowed == expected, (now, client)
        assert [o.remaining for o in outcomes] == remaining


@settings(max_examples=2000)
@given(
    st.integers(1, 6), st.integers(1, 50), st.booleans(), st.integers(0, 6), st.integers(0, 6),
    st.integers(0, 500),
)  # fmt: skip
def test_retry_after_is_the_least_wait_for_a_lone_client(
    max_requests: int, length: int, sliding: bool, current: int, previous: int, now: int
) -> None:
    lim = limit(max_requests, length, sliding)
    counter = Counter(min(current, max_requests), min(previous, max_requests) if sliding else 0)
    outcome = evaluate(lim, counter, now)
    if outcome.allowed:
        return
    start, _ = window(lim, now)

    def admitted_after(wait: int) -> bool:
        later = now + wait
        s2, _ = window(lim, later)
        state = counter if s2 == start else Counter(0, counter.current) if s2 == start + length \
            else Counter()  # fmt: skip
        return evaluate(lim, state, later).allowed

    assert admitted_after(outcome.retry_ms)
    assert not any(admitted_after(w) for w in range(outcome.retry_ms))


def test_a_request_refused_by_one_rule_counts_against_none() -> None:
    wide, narrow = limit(10, 1000, False, "wide"), limit(1, 1000, False, "narrow")
    limiter = MemoryLimiter()
    assert limiter.hit([(wide, "w"), (narrow, "n")], 5)[0]
    for _ in range(5):
        allowed, outcomes = limiter.hit([(wide, "w"), (narrow, "n")], 6)
        assert not allowed
        assert outcomes[0].allowed  # wide would have admitted it...
    allowed, outcomes = limiter.hit([(wide, "w")], 7)
    assert allowed
    assert outcomes[0].remaining == 8  # ...but only the first request counted


def test_no_aligned_window_admits_more_than_max_even_when_sliding() -> None:
    lim = limit(5, 100, True)
    limiter = MemoryLimiter()
    admitted: dict[int, int] = {}
    for now in range(0, 1000):
        if limiter.hit([(lim, "k")], now)[0]:
            start = now - now % 100
            admitted[start] = admitted.get(start, 0) + 1
    assert max(admitted.values()) <= 5
    assert sum(admitted.values()) > 5 * 5  # and it does admit steadily


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        pytest.param(datetime(2026, 1, 31, 23, 59, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC),
                     datetime(2026, 2, 1, tzinfo=UTC), id="january"),
        pytest.param(datetime(2028, 2, 29, 12, tzinfo=UTC), datetime(2028, 2, 1, tzinfo=UTC),
                     datetime(2028, 3, 1, tzinfo=UTC), id="leap-february"),
        pytest.param(datetime(2026, 12, 15, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC),
                     datetime(2027, 1, 1, tzinfo=UTC), id="december"),
    ],
)  # fmt: skip
def test_calendar_month_windows_follow_utc_months(
    moment: datetime, start: datetime, end: datetime
) -> None:
    [lim] = compile_limits([RateLimitRule(unit="calendar_month", max_requests=5)])
    now = int(moment.timestamp() * 1000)
    assert window(lim, now) == (int(start.timestamp() * 1000),
                                int((end - start).total_seconds() * 1000))  # fmt: skip
    assert not lim.sliding


def test_calendar_day_resets_at_utc_midnight() -> None:
    [lim] = compile_limits([RateLimitRule(unit="calendar_day", max_requests=1)])
    limiter = MemoryLimiter()
    before = int(datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)
    assert limiter.hit([(lim, "k")], before)[0]
    assert not limiter.hit([(lim, "k")], before + 500)[0]
    assert limiter.hit([(lim, "k")], before + 1000)[0]  # 00:00:00 the next day


def test_rules_are_ordered_by_priority() -> None:
    rules = [RateLimitRule(unit="second", max_requests=1, priority=p) for p in (0, 5, 2)]
    assert [lim.max_requests for lim in compile_limits(rules)] == [1, 1, 1]
    assert [r.priority for r in rules] == [0, 5, 2]
    assert [lim.priority for lim in compile_limits(rules)] == [5, 2, 0]


def test_threads_are_exact() -> None:
    import threading

    lim = limit(100, 60_000, True)
    limiter = MemoryLimiter()
    admitted = []
    barrier = threading.Barrier(64)

    def worker() -> None:
        barrier.wait()
        admitted.extend(1 for _ in range(10) if limiter.hit([(lim, "app")], 30_000)[0])

    threads = [threading.Thread(target=worker) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 100


def test_memory_stays_bounded() -> None:
    lim = limit(1, 10, False)
    limiter = MemoryLimiter(max_counters=50)
    for i in range(1000):
        limiter.hit([(lim, f"k{i}")], i)
    assert len(limiter) <= 51


@given(
    remaining=st.integers(min_value=0, max_value=10**9),
    reset_ms=st.integers(min_value=0, max_value=31 * 86_400_000),
    rules=st.integers(min_value=1, max_value=3),
)
def test_the_asgi_bytes_are_the_str_headers_encoded(
    remaining: int, reset_ms: int, rules: int
) -> None:
    # allowed_header_bytes builds the usual one-rule answer from pre-encoded pieces, a twin of
    # rate_headers' own fast path: the two must stay the same headers
    limits = compile_limits(
        [RateLimitRule(unit=u, max_requests=10**9) for u in ("minute", "hour", "day")[:rules]]
    )
    outcomes = tuple(Outcome(limit, True, remaining, reset_ms) for limit in limits)
    encoded = [(n.encode(), v.encode()) for n, v in rate_headers(outcomes, False)]
    assert allowed_header_bytes(outcomes) == encoded
    credited = (b"x-credits-remaining", str(remaining).encode())
    assert allowed_header_bytes(outcomes, remaining) == [*encoded, credited]
    # the names a response is checked for before the verdict's replace its own
    assert {name for name, _ in allowed_header_bytes(outcomes, remaining)} <= ALLOWED_HEADER_NAMES
