"""The two drivers of the pure pipeline (:mod:`keysentry.core.pipeline`): the only code
written twice, once sync and once async. They sequence its steps and do the I/O it asks for:
the lookup (cache, then store) and the rate-limit hit. A cache hit on the in-process limiter
never leaves the event loop."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, final

from keysentry.core.credits import Pool, period_start, pool_key
from keysentry.core.decision import Decision, Identity, Reason
from keysentry.core.keys import MAX_KEY_LENGTH, sha256
from keysentry.core.pipeline import (
    COMMON_METHODS,
    UNAVAILABLE,
    Hit,
    LookupKey,
    LookupResult,
    Policy,
    RequestFacts,
    Spend,
    admitted,
    after_hit,
    after_lookup,
    after_spend,
    begin,
    counted,
    path_problem,
    permitted,
)
from keysentry.core.ratelimit import Outcome
from keysentry.errors import StoreError
from keysentry.limiters import Limiter
from keysentry.stores.cached import MISS, CachedKeyStore, StillDown
from keysentry.stores.usage import ADMITTED_MAX, UsageRecorder
from keysentry.verification.arguments import (
    bearer,
    presented,
    request_facts,
    request_policy,
)
from keysentry.verification.credits import STALE, CreditPools
from keysentry.verification.reads import SharedReads, in_thread

__all__ = ["Observer", "Verifier"]


@final
class _Reload:
    """A credit lease found the cached entry out of date: verify again."""


_RELOAD = _Reload()
_NO_LEASE = Decision.deny(Reason.UNAVAILABLE)  # the store failed while leasing credits
Taken = int | None | _Reload | Decision
_new = tuple.__new__  # builds a LookupKey (see core.pipeline)
_OK = Reason.OK  # a module global: Reason.OK goes through the enum's metaclass

logger = logging.getLogger("keysentry")


class Observer(Protocol):
    """What is told of each verdict, with the cache's answer (an entry, ``None`` for a key
    known to be unknown, :data:`~keysentry.stores.cached.MISS`, or ``False`` when no lookup
    was made) and the clock reading the verification started at."""

    def observe(
        self,
        reason: Reason,
        identity: Identity | None,
        rate_limits: Sequence[Outcome],
        cached: object,
        started: float,
    ) -> None:
        """Count one verdict, given by its fields (an admitted request on the one-step path
        has no :class:`Decision`)."""

    def store_failed(self) -> None:
        """Count one failed store read."""


def _observe(metrics: Observer, decision: Decision, cached: object, started: float) -> None:
    """Tell *metrics* of *decision* (see :meth:`Observer.observe`)."""
    metrics.observe(decision.reason, decision.identity, decision.rate_limits, cached, started)


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
        self._remote = limiter.remote  # a limiter that does I/O counts on the general path
        self.usage = usage
        self.clock = clock
        self.metrics = metrics
        self.cache = cache
        self.credits = CreditPools(cache.store)
        """Credits leased from the store and not yet spent, in this process."""
        self.reads = SharedReads()
        """The cold reads async callers have in progress (one thread for a burst's key)."""

    @property
    def cache(self) -> CachedKeyStore:
        """The key cache (and, behind it, the store)."""
        return self._cache

    @cache.setter
    def cache(self, cache: CachedKeyStore) -> None:
        self._cache = cache
        # one clock reading serves the cache and the checks when they share the clock
        self._cache_timer = None if cache.timer is self.clock else cache.timer

    def quick(
        self, credential: bytes, path: str, policy: Policy
    ) -> Identity | Decision | LookupKey | None:
        """The usual request in one step: a key found fresh in the cache under its SHA-256,
        whose entry is :attr:`~keysentry.core.decision.KeyEntry.plain`, with no counters or
        counted on the in-process limiter. Returns, for an admitted request, the key's
        :class:`Identity` carrying the request's rate-limit outcomes (all its verdict would
        add: :func:`~keysentry.core.pipeline.admitted` makes it one); for a refused one, the
        verdict; for a key found in the cache that needs the general path's later steps
        (credits, an allowlist, an expired or revoked key, counters on Redis, …), its
        :class:`LookupKey` to pass to :meth:`verify_request_general`; or ``None``, when the
        general path must decide from the start.

        *credential* is the one key the request carries, as bytes; *path* its path (the
        method was found valid). A digest found in the cache is proof that *credential* is
        that key, so its format and checksum need no check here: they are for keys the cache
        does not know, which the general path checks before any store lookup.
        """
        if len(credential) > MAX_KEY_LENGTH or (  # hash no more than a key's length
            ("//" in path or "." in path) and path_problem(path)
        ):
            return None
        digest = sha256(credential).hexdigest()
        clock = self.clock  # called from a local, as KeySentryMiddleware calls this method
        now = clock()
        timer = self._cache_timer
        entry = self._cache.fresh(digest, now if timer is None else timer())
        if entry is None:
            return None
        if (
            not entry.plain
            or entry.digest != digest  # an old secret in its grace period
            or (entry.expires_at is not None and now >= entry.expires_at)
            or (self._remote and entry.checks)  # counting is I/O: the drivers await it
        ):
            secret = credential.decode("ascii")  # it hashed to a stored key: ASCII
            return _new(LookupKey, (secret.rpartition("_")[0], secret, digest))
        decision = permitted(entry, policy.permissions, policy.resource, path)
        if not decision.allowed:
            return self._noted(decision, "", entry, now)
        identity = entry.identity
        checks = entry.checks
        if checks:
            answer = self.limiter.hit(checks, int(now * 1000))
            if type(answer) is not tuple or not answer[0]:
                return self._noted(counted(identity, answer), "", entry, now)
            identity = identity.with_rate_limits(answer[1])
        # the usual count, appended without a call or a lock (UsageRecorder.admitted)
        usage = self.usage
        found = usage.admitted.get(identity.key_id)
        if found is not None and found[0] <= now < found[1] and len(found[2]) < ADMITTED_MAX:
            found[2].append(now)
        else:
            usage.note(_OK, identity, "", now)
        if self.metrics is not None:
            self.metrics.observe(_OK, identity, identity.rate_limits, entry, now)
        return identity

    def begin_call(
        self,
        credential: str | None,
        method: str,
        path: str,
        permissions: Sequence[str] | str,
        resource: str | None,
        api_key: str | None,
        client_ip: str | None,
        cost: object,
    ) -> Decision | tuple[RequestFacts, Policy, LookupKey | None]:
        """``ks.verify``'s arguments taken as far as the one-step path goes, before any
        :class:`RequestFacts` is built: the verdict, or what
        :meth:`verify_request_general` needs to go on (the key, if the one-step path found
        it in the cache).

        The caller has checked the text arguments' types (:func:`check_types`: a compiled
        build refuses a wrong one at this call, with a TypeError).

        Raises:
            ValidationError: *permissions* not strings, or *cost* not an integer from 0 up.
        """
        policy = request_policy(permissions, resource, cost)
        found: LookupKey | None = None
        if (
            api_key is None  # two places a key may come from: the general path decides
            and credential is not None
            and method in COMMON_METHODS
            and path.startswith("/")
        ):
            key = presented(credential)
            if key is not None:
                quick = self.quick(key, path, policy)
                if type(quick) is Identity:
                    return admitted(quick)
                if type(quick) is Decision:
                    return quick
                found = quick
        return request_facts(credential, method, path, api_key, client_ip), policy, found

    def verify_request(
        self, facts: RequestFacts, policy: Policy, found: LookupKey | None = None
    ) -> Decision:
        """Verify prepared request facts against a policy (what the WSGI adapter calls);
        from the general path's second step when :meth:`quick` already *found* the key."""
        quick = self._one_step(facts, policy, found)
        if type(quick) is Decision:
            return quick
        return self.verify_request_general(facts, policy, quick)

    async def averify_request(
        self, facts: RequestFacts, policy: Policy, found: LookupKey | None = None
    ) -> Decision:
        """Async :meth:`verify_request` (what the ASGI adapter calls): a store read runs in
        a worker thread, a Redis hit on the event loop."""
        quick = self._one_step(facts, policy, found)
        if type(quick) is Decision:
            return quick
        return await self.averify_request_general(facts, policy, quick)

    def _one_step(
        self, facts: RequestFacts, policy: Policy, found: LookupKey | None
    ) -> Decision | LookupKey | None:
        """What the one-step path makes of prepared facts, unless it already *found* the key:
        the verdict, or where the general path starts (the key found, or ``None``)."""
        if found is not None:
            return found
        credential = bearer(facts)
        if credential is None:
            return None
        quick = self.quick(credential, facts.path, policy)
        return admitted(quick) if type(quick) is Identity else quick

    def verify_request_general(
        self, facts: RequestFacts, policy: Policy, found: LookupKey | None = None
    ) -> Decision:
        """:meth:`verify_request` by the general path: every step of the pipeline, or those
        after the first when :meth:`quick` *found* the key in the cache."""
        now = self.clock()
        lookup = begin(facts) if found is None else found
        if type(lookup) is not LookupKey:
            if self.metrics is not None:
                _observe(self.metrics, lookup, False, now)
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
        decision: Decision
        if type(hit) is Hit:
            decision = after_hit(hit, self.limiter.hit(hit.checks, hit.now_ms))
        elif type(hit) is Spend:
            decision = self._spend(hit, retry=(facts, policy))
        else:
            decision = hit
        return self._noted(decision, lookup.prefix, cached, now)

    async def averify_request_general(
        self, facts: RequestFacts, policy: Policy, found: LookupKey | None = None
    ) -> Decision:
        """Async :meth:`verify_request_general`: a store read runs in a worker thread, a
        Redis hit on the event loop."""
        now = self.clock()
        lookup = begin(facts) if found is None else found
        if type(lookup) is not LookupKey:
            if self.metrics is not None:
                _observe(self.metrics, lookup, False, now)
            return lookup
        timer = self._cache_timer
        cached = self._cache.get(lookup.digest, now if timer is None else timer())
        entry: LookupResult
        if cached is MISS:
            entry = await self._aload(lookup)
            now = self.clock()
        else:
            entry = cached
        hit = after_lookup(lookup, entry, facts, policy, now)
        decision: Decision
        if type(hit) is Spend:
            decision = await self._aspend(hit, (facts, policy))
        elif type(hit) is not Hit:
            decision = hit
        elif self.limiter.remote:
            decision = after_hit(hit, await self.limiter.ahit(hit.checks, hit.now_ms))
        else:
            decision = after_hit(hit, self.limiter.hit(hit.checks, hit.now_ms))
        return self._noted(decision, lookup.prefix, cached, now)

    def _noted(self, decision: Decision, prefix: str, cached: object, now: float) -> Decision:
        """Tell the usage counts and the metrics of *decision*, a verification of a key with
        *prefix* that started at *now*; return it."""
        self.usage.note(decision.reason, decision.identity, prefix, now)
        if self.metrics is not None:
            _observe(self.metrics, decision, cached, now)
        return decision

    # ------------------------------------------------------------ credits
    def _spend(self, spend: Spend, retry: tuple[RequestFacts, Policy]) -> Decision:
        """Take the cost from this process's pool (leasing from the store when it is short),
        then count the rate limits; give the cost back if they refuse."""
        pool = pool_key(spend.plan, period_start(spend.plan, spend.now_ms / 1000))
        taken = self._take(spend, pool)
        if type(taken) is _Reload:
            return self.verify_request_general(*retry)  # the entry was evicted: once more, reloaded
        if type(taken) is Decision:
            return taken
        remaining = taken if type(taken) is int else None
        if remaining is None or not spend.checks:
            return after_spend(spend, remaining, None)
        result = self.limiter.hit(spend.checks, spend.now_ms)
        if type(result) is not tuple or not result[0]:
            self.credits.give_back(pool, spend.cost)
            remaining += spend.cost
        return after_spend(spend, remaining, result)

    async def _aspend(self, spend: Spend, retry: tuple[RequestFacts, Policy]) -> Decision:
        """:meth:`_spend` for the async driver: a lease (a store write) runs in a thread,
        a Redis hit on the event loop."""
        pool = pool_key(spend.plan, period_start(spend.plan, spend.now_ms / 1000))
        taken: Taken = self.credits.take(pool, spend.cost)
        if taken is None:  # a lease is needed: a store write, off the event loop
            from anyio import to_thread  # starlette's dependency

            taken = await to_thread.run_sync(self._take, spend, pool)
        if type(taken) is _Reload:
            return await self.averify_request_general(*retry)
        if type(taken) is Decision:
            return taken
        remaining = taken if type(taken) is int else None
        if remaining is None or not spend.checks:
            return after_spend(spend, remaining, None)
        if self.limiter.remote:
            result = await self.limiter.ahit(spend.checks, spend.now_ms)
        else:
            result = self.limiter.hit(spend.checks, spend.now_ms)
        if type(result) is not tuple or not result[0]:
            self.credits.give_back(pool, spend.cost)
            remaining += spend.cost
        return after_spend(spend, remaining, result)

    def _take(self, spend: Spend, pool: Pool) -> Taken:
        """The credits left after taking the cost; ``None`` when there are not enough; a
        503 when the store failed; :data:`_RELOAD` when the cached entry's credits are out
        of date (it is evicted)."""
        credits = self.credits
        remaining = credits.take(pool, spend.cost)
        if remaining is not None:
            return remaining
        try:
            leased = credits.lease(spend.plan, pool, spend.cost)
        except StoreError as exc:
            logger.warning("keysentry: could not lease credits, answering 503: %s", exc)
            return _NO_LEASE
        if leased == STALE:
            self._cache.evict_key(spend.plan.key_id)
            return _RELOAD
        return credits.take(pool, spend.cost)  # the lease made the pool, however little it got

    async def _aload(self, lookup: LookupKey) -> LookupResult:
        """:meth:`_load` in a worker thread, unless another caller on this event loop is
        reading the key: then wait for that read and take what it cached (what it could not
        cache, a revoke having overtaken it, say, is read anew)."""
        digest = lookup.digest
        while await self.reads.wait(digest):
            timer = self._cache_timer
            cached = self._cache.get(digest, self.clock() if timer is None else timer())
            if cached is not MISS:
                return cached
        async with self.reads.reading(digest):
            return await in_thread(self._load, lookup)

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
