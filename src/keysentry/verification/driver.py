"""The two drivers of the pure pipeline (:mod:`keysentry.core.pipeline`): the only code
written twice, once sync and once async. They sequence its steps and do the I/O it asks for:
the lookup (cache, then store) and the rate-limit hit. A cache hit on the in-process limiter
never leaves the event loop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from keysentry.core.decision import Decision
from keysentry.core.pipeline import (
    UNAVAILABLE,
    Hit,
    LookupKey,
    LookupResult,
    Policy,
    RequestFacts,
    after_hit,
    after_lookup,
    begin,
    normal_method,
)
from keysentry.errors import StoreError
from keysentry.limiters import Limiter
from keysentry.stores.cached import MISS, CachedKeyStore, StillDown
from keysentry.stores.usage import UsageRecorder

__all__ = ["Observer", "Verifier", "request_facts"]

logger = logging.getLogger("keysentry")
_to_thread: Callable[..., Awaitable[LookupResult]] | None = None


async def _run_in_thread(
    function: Callable[[LookupKey], LookupResult], lookup: LookupKey
) -> LookupResult:
    global _to_thread  # resolved once: an import statement costs on every call
    if _to_thread is None:
        from anyio import to_thread  # starlette's dependency; sync callers never need it

        _to_thread = to_thread.run_sync
    return await _to_thread(function, lookup)


class Observer(Protocol):
    """What is told of each verdict, with the cache's answer (an entry, ``None`` for a key
    known to be unknown, :data:`~keysentry.stores.cached.MISS`, or ``None`` when no lookup
    was made) and the clock reading the verification started at."""

    def observe(self, decision: Decision, cached: object, started: float) -> None:
        """Count one verdict."""

    def store_failed(self) -> None:
        """Count one failed store read."""


class Verifier:
    """Verify requests against the cache, the store behind it and the limiter.

    Args:
        cache: the key cache (and, behind it, the store).
        limiter: where rate-limit counters live.
        usage: counts each verification and records each used key's ``last_used_at``.
        clock: the current Unix time; read once per request.
        metrics: told of each verdict (Prometheus, ``KeySentry(metrics=True)``).
    """

    def __init__(
        self,
        cache: CachedKeyStore,
        limiter: Limiter,
        usage: UsageRecorder,
        clock: Callable[[], float],
        metrics: Observer | None = None,
    ) -> None:
        self.limiter = limiter
        self.usage = usage
        self.clock = clock
        self.metrics = metrics
        self.cache = cache

    @property
    def cache(self) -> CachedKeyStore:
        """The key cache (and, behind it, the store)."""
        return self._cache

    @cache.setter
    def cache(self, cache: CachedKeyStore) -> None:
        self._cache = cache
        # one clock reading serves the cache and the checks when they share the clock
        self._cache_timer = None if cache.timer is self.clock else cache.timer

    def verify_request(self, facts: RequestFacts, policy: Policy) -> Decision:
        """Verify prepared request facts against a policy (what the WSGI adapter calls)."""
        now = self.clock()
        lookup = begin(facts)
        if type(lookup) is not LookupKey:
            if self.metrics is not None:
                self.metrics.observe(lookup, False, now)
            return lookup
        timer = self._cache_timer
        cached = self._cache.get(lookup.digest, now if timer is None else timer())
        entry: LookupResult
        if cached is MISS:
            entry = self._load(lookup)
            now = self.clock()  # the store may have taken a while
        else:
            entry = cached
        hit = after_lookup(lookup, entry, facts, policy, now)
        decision = (
            after_hit(hit, self.limiter.hit(hit.checks, hit.now_ms)) if type(hit) is Hit else hit
        )
        self.usage.note(decision, lookup.prefix, now)
        if self.metrics is not None:
            self.metrics.observe(decision, cached, now)
        return decision

    async def averify_request(self, facts: RequestFacts, policy: Policy) -> Decision:
        """Async :meth:`verify_request` (what the ASGI adapter calls): a store read runs in
        a worker thread, a Redis hit on the event loop."""
        now = self.clock()
        lookup = begin(facts)
        if type(lookup) is not LookupKey:
            if self.metrics is not None:
                self.metrics.observe(lookup, False, now)
            return lookup
        timer = self._cache_timer
        cached = self._cache.get(lookup.digest, now if timer is None else timer())
        entry: LookupResult
        if cached is MISS:
            entry = await _run_in_thread(self._load, lookup)
            now = self.clock()
        else:
            entry = cached
        hit = after_lookup(lookup, entry, facts, policy, now)
        decision: Decision
        if type(hit) is not Hit:
            decision = hit
        elif self.limiter.remote:
            decision = after_hit(hit, await self.limiter.ahit(hit.checks, hit.now_ms))
        else:
            decision = after_hit(hit, self.limiter.hit(hit.checks, hit.now_ms))
        self.usage.note(decision, lookup.prefix, now)
        if self.metrics is not None:
            self.metrics.observe(decision, cached, now)
        return decision

    def _load(self, lookup: LookupKey) -> LookupResult:
        try:
            return self._cache.load(lookup)
        except StoreError as exc:
            # never the key itself: the message names the store and the driver's error; one
            # warning per failed attempt, not one per request while the store stays down
            if self.metrics is not None and type(exc) is not StillDown:
                self.metrics.store_failed()
            level = logging.DEBUG if type(exc) is StillDown else logging.WARNING
            logger.log(level, "keysentry: key lookup failed, answering 503: %s", exc)
            return UNAVAILABLE


def request_facts(
    credential: str | None,
    method: str,
    path: str,
    permissions: Sequence[str] | str,
    resource: str | None,
    api_key: str | None,
    client_ip: str | None,
) -> tuple[RequestFacts, Policy]:
    """The facts and policy of a request described by ``ks.verify``'s arguments."""
    if isinstance(permissions, str):
        permissions = (permissions,)
    facts = RequestFacts(
        method=normal_method(method),
        path=path if path.startswith("/") else "/" + path,
        authorization=(credential,) if credential is not None else (),
        api_key=(api_key,) if api_key is not None else (),
        client_ip=client_ip,
    )
    return facts, Policy(permissions=tuple(permissions), resource=resource)
