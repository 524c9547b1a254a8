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

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, make_asgi_app

from keysentry.core.decision import Decision, KeyEntry, Reason
from keysentry.stores.cached import MISS

__all__ = ["Metrics", "metrics_app", "metrics_registry"]

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

    Args:
        per_key: also count per key (``keysentry_key_verifications_total``).
        clock: the verifier's clock, for the latency.
    """

    def __init__(self, *, per_key: bool = False, clock: Callable[[], float]) -> None:
        self.per_key = per_key
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
        self._hit = lookups.labels("hit")
        self._miss = lookups.labels("miss")
        self._negative = lookups.labels("negative")
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
        # (app, reason) -> the labelled child: labels() takes a lock and builds a tuple
        self._children: dict[tuple[str, str], Any] = {}

    def observe(self, decision: Decision, cached: object, started: float) -> None:
        """Count one verdict; *cached* is the cache's answer (``False``: no lookup)."""
        identity = decision.identity
        app = "" if identity is None else identity.app_slug
        reason = decision.reason
        child = self._children.get((app, reason))
        if child is None:
            child = self._children[(app, reason)] = self._verifications.labels(app, reason.value)
        child.inc()
        if self._key_verifications is not None and identity is not None:
            self._key_verifications.labels(app, identity.key_id, reason.value).inc()
        if cached is not False:
            if type(cached) is KeyEntry:
                self._hit.inc()
            elif cached is MISS:
                self._miss.inc()
            else:
                self._negative.inc()
        if reason is Reason.RATE_LIMITED:
            for outcome in decision.rate_limits:
                if not outcome.allowed:
                    self._limited.labels(app, outcome.limit.name).inc()
        self._latency.observe(max(self._clock() - started, 0.0))

    def store_failed(self) -> None:
        """Count one failed store read."""
        self._store_errors.inc()

    def watch_limiter(self, limiter: object) -> None:
        """Count the failed calls of a shared limiter (one that reports them)."""
        if hasattr(limiter, "on_failure"):
            limiter.on_failure = self._limiter_errors.inc


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
    """An ASGI app answering Prometheus scrapes (mount it, e.g. at ``/metrics``)."""
    return make_asgi_app(registry=metrics_registry())
