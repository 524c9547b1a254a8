"""Prometheus metrics (``pip install 'keysentry[metrics]'``, prometheus_client).

``KeySentry(metrics=True)`` counts into these families (docs/analytics.md lists them):

- ``keysentry_verifications_total{app, outcome}``: every verification; ``app`` is empty
  when no key's secret matched;
- ``keysentry_key_verifications_total{app, key, outcome}``: the same per key, only with
  ``metrics_per_key=True`` (one series per key: mind the cardinality);
- ``keysentry_verification_duration_seconds``: the verification's latency (histogram);
- ``keysentry_cache_lookups_total{result}``: ``hit``, ``miss`` or ``negative`` (a key known
  to be unknown);
- ``keysentry_store_errors_total`` and ``keysentry_limiter_errors_total``: failed reads of
  the key store and failed calls to Redis;
- ``keysentry_rate_limited_total{app, rule}``: requests refused 429, by the refusing rule.

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before
the workers start (``keysentry serve`` does it for you): prometheus_client then keeps each
process's values in a file there, and :func:`metrics_app` adds them up.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    make_asgi_app,
)

from keysentry.core.decision import Identity, KeyEntry, Reason
from keysentry.core.ratelimit import Outcome
from keysentry.stores.cached import MISS

__all__ = ["Metrics", "exposition", "metrics_app", "metrics_registry", "publish_all"]

#: Latency buckets (seconds): a cached verification takes microseconds, a store read
#: milliseconds.
BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
_families: dict[str, Any] = {}


def _family(kind: type[Any], name: str, documentation: str, *labels: str, **kw: Any) -> Any:
    # one per process: prometheus_client refuses to register a name twice, and several
    # KeySentry objects (tests, several stores) share the families
    family = _families.get(name)
    if family is None:
        family = _families[name] = kind(name, documentation, labels, **kw)
    return family


class Metrics:
    """The observer the verifier tells of each verdict (see the module docstring).

    A verdict costs one dict increment here: what prometheus_client's ``inc()`` and
    ``observe()`` would cost per request (a lock and several Python calls each, about
    2 µs together) is paid once per distinct (app, outcome, cache result, latency bucket)
    when the counts are published: before each scrape of this process, and every
    *interval* seconds by a background thread, so that a scrape answered by another
    worker sees this one's counts at most that late.

    Args:
        per_key: also count per key (``keysentry_key_verifications_total``).
        clock: the verifier's clock, for the latency.
        interval: seconds between publications by the background thread.
    """

    def __init__(
        self, *, per_key: bool = False, clock: Callable[[], float], interval: float = 1.0
    ) -> None:
        self.per_key = per_key
        self.interval = interval
        self._clock = clock
        self._verifications = _family(
            Counter, "keysentry_verifications", "API key verifications, by outcome.",
            "app", "outcome",
        )  # fmt: skip
        self._key_verifications = None
        if per_key:
            self._key_verifications = _family(
                Counter, "keysentry_key_verifications", "API key verifications per key.",
                "app", "key", "outcome",
            )  # fmt: skip
        self._latency = _family(
            Histogram, "keysentry_verification_duration_seconds",
            "Time to verify a request's API key.", buckets=BUCKETS,
        )  # fmt: skip
        lookups = _family(
            Counter, "keysentry_cache_lookups", "Key cache lookups, by result.", "result"
        )
        # the type of the cache's answer -> its result label (bool: no lookup was made)
        self._lookups = {
            KeyEntry: lookups.labels("hit"),
            type(MISS): lookups.labels("miss"),
            type(None): lookups.labels("negative"),
        }
        self._store_errors = _family(
            Counter, "keysentry_store_errors", "Failed reads of the key store."
        )
        self._limiter_errors = _family(
            Counter, "keysentry_limiter_errors", "Failed calls to the shared rate limiter."
        )
        self._limited = _family(
            Counter, "keysentry_rate_limited", "Requests refused by a rate limit, by rule.",
            "app", "rule",
        )  # fmt: skip
        self._lock = threading.Lock()
        self._counts: dict[tuple[Any, ...], int] = {}  # not yet published
        self._latency_sum = 0.0
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        _live.add(self)

    def observe(
        self,
        reason: Reason,
        identity: Identity | None,
        rate_limits: Sequence[Outcome],
        cached: object,
        started: float,
    ) -> None:
        """Count one verdict: its *reason*, the key's *identity* (``None`` when no secret
        matched) and, read when a rate limit refused it, its *rate_limits* outcomes; *cached*
        is the cache's answer (``False``: no lookup), *started* the clock reading the
        verification began at. The verdict's fields rather than a ``Decision``: an admitted
        request on the one-step path has none to give."""
        clock = self._clock  # called from a local: a method call on it is not specialized
        elapsed = clock() - started
        if identity is None:
            count: tuple[Any, ...] = ("", "", reason, type(cached), bisect_left(_BOUNDS, elapsed))
        else:
            key = identity.key_id if self.per_key else ""
            count = (identity.app_slug, key, reason, type(cached), bisect_left(_BOUNDS, elapsed))
        lock = self._lock
        lock.acquire()  # acquire/release in try costs half what "with" does, every request
        try:
            counts = self._counts
            counts[count] = counts.get(count, 0) + 1
            if elapsed > 0.0:
                self._latency_sum += elapsed
            if reason is _RATE_LIMITED:
                for outcome in rate_limits:
                    if not outcome.allowed:
                        rule = (count[0], outcome.limit.name)
                        counts[rule] = counts.get(rule, 0) + 1
        finally:
            lock.release()
        if self._thread is None:
            self._start()

    def publish(self) -> None:
        """Add what was counted since the last call to the Prometheus families."""
        with self._lock:
            counts, self._counts = self._counts, {}
            latency_sum, self._latency_sum = self._latency_sum, 0.0
        if not counts:
            return
        verifications: dict[tuple[str, str], int] = {}
        buckets: dict[int, int] = {}
        for count, n in counts.items():
            if len(count) == 2:  # (app, rule): a rate-limit refusal
                self._limited.labels(*count).inc(n)
                continue
            app, key, reason, answer, bucket = count
            outcome = str(reason)
            verifications[app, outcome] = verifications.get((app, outcome), 0) + n
            if self._key_verifications is not None and key:
                self._key_verifications.labels(app, key, outcome).inc(n)
            lookup = self._lookups.get(answer)
            if lookup is not None:
                lookup.inc(n)
            buckets[bucket] = buckets.get(bucket, 0) + n
        for (app, outcome), n in verifications.items():
            self._verifications.labels(app, outcome).inc(n)
        _observe_many(self._latency, buckets, latency_sum)

    def store_failed(self) -> None:
        """Count one failed store read."""
        self._store_errors.inc()

    def watch_limiter(self, limiter: object) -> None:
        """Count the failed calls of a shared limiter (one that reports them)."""
        if hasattr(limiter, "on_failure"):
            limiter.on_failure = self._limiter_errors.inc

    def close(self) -> None:
        """Publish what is pending and stop the background thread (``KeySentry.close()``)."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.publish()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopped.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="keysentry-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.publish()

    def _after_fork(self) -> None:
        # the parent's counts are the parent's to publish; its thread did not survive
        self._lock = threading.Lock()
        self._counts = {}
        self._latency_sum = 0.0
        self._thread = None
        self._stopped = threading.Event()


_live: weakref.WeakSet[Metrics] = weakref.WeakSet()
_RATE_LIMITED = Reason.RATE_LIMITED
_BOUNDS = (*BUCKETS, float("inf"))


def _observe_many(histogram: Any, buckets: dict[int, int], total: float) -> None:
    """Add *buckets* (bucket index -> observations) and their *total* to *histogram* in
    one step per bucket. prometheus_client has no bulk observe: this adds to its bucket
    and sum values, which ``observe()`` itself increments (else observes each bound)."""
    values = getattr(histogram, "_buckets", None)
    sum_value = getattr(histogram, "_sum", None)
    if values is None or sum_value is None or len(values) != len(_BOUNDS):
        for index, n in buckets.items():
            for _ in range(n):
                histogram.observe(_BOUNDS[index])
        return
    for index, n in buckets.items():
        values[index].inc(n)
    sum_value.inc(total)


def publish_all() -> None:
    """Publish every :class:`Metrics` of this process (before a scrape, and at exit)."""
    for metrics in list(_live):
        metrics.publish()


def _after_fork_in_child() -> None:
    for metrics in list(_live):
        metrics._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(publish_all)


def metrics_registry() -> CollectorRegistry:
    """The registry to expose: every worker's values under ``PROMETHEUS_MULTIPROC_DIR``,
    else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        collector: Callable[[CollectorRegistry], object] = multiprocess.MultiProcessCollector
        collector(registry)  # registers itself
        return registry
    return REGISTRY


def metrics_app() -> Any:
    """An ASGI app answering Prometheus scrapes (mount it, e.g. at ``/metrics``). It asks
    for no key: mount it where only the scraper reaches, or behind your own check."""
    app = make_asgi_app(registry=metrics_registry())

    async def scrape(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            publish_all()
        await app(scope, receive, send)

    return scrape


def exposition() -> tuple[bytes, str]:
    """The scrape's body and content type (what ``keysentry serve``'s ``/metrics`` sends)."""
    publish_all()
    return generate_latest(metrics_registry()), CONTENT_TYPE_LATEST
