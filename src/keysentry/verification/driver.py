"""The two drivers of the pure pipeline (:mod:`keysentry.core.pipeline`): the only code
written twice, once sync and once async. They sequence its steps and do the I/O it asks for:
the lookup (cache, then store) and the rate-limit hit. A cache hit on the in-process limiter
never leaves the event loop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from keysentry.core.decision import Decision, Reason
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

__all__ = ["Verifier", "request_facts"]

logger = logging.getLogger("keysentry")
# a key is "used" when its secret matched and it was usable: the request may still be
# refused for a permission, a resource or a rate limit
_USED = frozenset({Reason.OK, Reason.PERMISSION_DENIED, Reason.RESOURCE_DENIED})
_to_thread: Callable[..., Awaitable[LookupResult]] | None = None


async def _run_in_thread(
    function: Callable[[LookupKey], LookupResult], lookup: LookupKey
) -> LookupResult:
    global _to_thread  # resolved once: an import statement costs on every call
    if _to_thread is None:
        from anyio import to_thread  # starlette's dependency; sync callers never need it

        _to_thread = to_thread.run_sync
    return await _to_thread(function, lookup)


class Verifier:
    """Verify requests against the cache, the store behind it and the limiter.

    Args:
        cache: the key cache (and, behind it, the store).
        limiter: where rate-limit counters live.
        usage: records each used key's ``last_used_at``.
        clock: the current Unix time; read once per request.
    """

    def __init__(
        self,
        cache: CachedKeyStore,
        limiter: Limiter,
        usage: UsageRecorder,
        clock: Callable[[], float],
    ) -> None:
        self.limiter = limiter
        self.usage = usage
        self.clock = clock
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
        lookup = begin(facts)
        if type(lookup) is not LookupKey:
            return lookup
        now = self.clock()
        timer = self._cache_timer
        cached = self._cache.get(lookup.digest, now if timer is None else timer())
        entry: LookupResult
        if cached is MISS:
            entry = self._load(lookup)
            now = self.clock()  # the store may have taken a while
        else:
            entry = cached
        hit = after_lookup(lookup, entry, facts, policy, now)
        if type(hit) is not Hit:
            self._note_refusal(hit, now)
            return hit
        self.usage.record(hit.identity.key_id, now)
        return after_hit(hit, self.limiter.hit(hit.checks, hit.now_ms))

    async def averify_request(self, facts: RequestFacts, policy: Policy) -> Decision:
        """Async :meth:`verify_request` (what the ASGI adapter calls): a store read runs in
        a worker thread, a Redis hit on the event loop."""
        lookup = begin(facts)
        if type(lookup) is not LookupKey:
            return lookup
        now = self.clock()
        timer = self._cache_timer
        cached = self._cache.get(lookup.digest, now if timer is None else timer())
        entry: LookupResult
        if cached is MISS:
            entry = await _run_in_thread(self._load, lookup)
            now = self.clock()
        else:
            entry = cached
        hit = after_lookup(lookup, entry, facts, policy, now)
        if type(hit) is not Hit:
            self._note_refusal(hit, now)
            return hit
        self.usage.record(hit.identity.key_id, now)
        limiter = self.limiter
        if limiter.remote:
            return after_hit(hit, await limiter.ahit(hit.checks, hit.now_ms))
        return after_hit(hit, limiter.hit(hit.checks, hit.now_ms))

    def _note_refusal(self, decision: Decision, now: float) -> None:
        identity = decision.identity
        if identity is not None and decision.reason in _USED:
            self.usage.record(identity.key_id, now)

    def _load(self, lookup: LookupKey) -> LookupResult:
        try:
            return self._cache.load(lookup)
        except StoreError as exc:
            # never the key itself: the message names the store and the driver's error; one
            # warning per failed attempt, not one per request while the store stays down
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
