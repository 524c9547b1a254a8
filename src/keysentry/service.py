"""``KeySentry``: management and verification composed over one store, cache and limiter.

The management calls live in :mod:`keysentry.management`, the verification drivers in
:mod:`keysentry.verification`; this module chooses the backends from URLs, wires them
together and offers the adapters' factories (``require``, ``depends``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from keysentry.core.decision import Decision
from keysentry.core.keys import TokenFactory, random_token
from keysentry.core.pipeline import Policy, RequestFacts
from keysentry.core.ratelimit import Algorithm
from keysentry.errors import ConfigurationError
from keysentry.limiters import Limiter, limiter_from_url
from keysentry.limiters.base import OnError, check_on_error
from keysentry.management import Management
from keysentry.settings import (
    DEFAULT_DATABASE_URL,
    check_flag,
    check_limiter_url,
    check_seconds,
)
from keysentry.stores import KeyStore, store_from_url
from keysentry.stores.cached import CachedKeyStore
from keysentry.stores.notify import changes_from_url
from keysentry.stores.usage import UsageRecorder, install_stop_handler
from keysentry.usage import Retention
from keysentry.verification.arguments import check_types
from keysentry.verification.driver import Verifier
from keysentry.verification.entries import EntryBuilder

if TYPE_CHECKING:
    from keysentry.metrics import Metrics

__all__ = ["KeySentry"]

F = TypeVar("F", bound=Callable[..., Any])
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class KeySentry(Management):
    """Issue, manage and (with the adapters) verify API keys.

    Args:
        database_url: where keys live: ``sqlite:///./keysentry.db`` (the default),
            ``postgresql://…`` or ``memory://``. The schema is created on first use.
        limiter_url: where rate-limit counters live: ``None`` or ``memory://`` for this
            process (exact within it), ``redis://host:6379/0`` to share them with every
            worker and machine that uses the same Redis (exact across all of them; needs
            ``keysentry[redis]``). With Redis, cache invalidations also travel over its
            pub/sub: a key revoked in one process is refused by the others within
            milliseconds (the event log remains the fallback, every *sync_interval*).
        on_limiter_error: when Redis cannot be reached: ``"open"`` (default: admit, logged),
            ``"closed"`` (503 with ``Retry-After``) or ``"local"`` (count in this process).
            Authentication never depends on the limiter.
        limiter_timeout: seconds to wait for Redis (connect and each reply).
        rate_limit_algorithm: ``"sliding_window"`` (default) or ``"fixed_window"``.
        store: a ready :class:`~keysentry.stores.KeyStore`, instead of *database_url*.
        limiter: a ready :class:`~keysentry.limiters.Limiter`, instead of *limiter_url*.
        clock: returns the current time as a Unix timestamp; tests inject a fake clock.
        token_factory: returns *n* random base62 characters; tests inject a fixed one.
        cache_size: how many verified keys to keep in memory.
        cache_ttl: seconds a cached key is trusted before it is read again (0: every
            request reads the store).
        sync_interval: seconds between reads of the event log, which is how changes made by
            other processes (workers, the CLI) reach this one: a key revoked elsewhere is
            refused here at most this long after. Changes made through this object take
            effect on the next request. ``None`` turns the log off (then *cache_ttl* bounds);
            0 reads it before every request.
        max_stale: while the store is unreachable, a key verified before keeps verifying for
            at most this many seconds after it was last confirmed; unknown keys get 503.
        usage_interval: seconds between batched writes of the keys' ``last_used_at`` (a
            background thread; also written at :meth:`close`, at exit and on SIGTERM).
            ``None``: only then and at ``usage.flush()``.
        analytics: count every verification by app, key and outcome per minute, written
            behind with ``last_used_at`` (:meth:`get_usage`); ``False`` counts nothing.
        retention: how long minute, hour and day buckets and events are kept
            (:class:`~keysentry.usage.Retention`: 7 days, 90 days, kept, kept).
        metrics: Prometheus metrics (``keysentry[metrics]``): verifications by app and
            outcome, a latency histogram, cache lookups, store and limiter errors,
            rate-limited requests by rule (docs/analytics.md).
        metrics_per_key: also label verifications with the key id (one series per key).
        redis_namespace: what this deployment's names on Redis start with: the counters
            (``keysentry:rl:…``) and the invalidation channel (``keysentry:changes:0``, the
            database number added). Two deployments that share a Redis need different
            namespaces or database numbers.

    Raises:
        ConfigurationError: an unsupported URL, both *database_url* and *store*, or a
            setting of the wrong type or out of range (named in the message).

    Use it as a context manager, or call :meth:`close`, to release database connections.
    """

    verify_request: Callable[[RequestFacts, Policy], Decision]
    """Verify prepared request facts against a policy (what the WSGI adapter calls)."""
    averify_request: Callable[[RequestFacts, Policy], Awaitable[Decision]]
    """Async :attr:`verify_request` (what the ASGI adapter calls): a store read runs in a
    worker thread."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        limiter_url: str | None = None,
        on_limiter_error: OnError = "open",
        limiter_timeout: float = 0.1,
        store: KeyStore | None = None,
        limiter: Limiter | None = None,
        clock: Callable[[], float] = time.time,
        token_factory: TokenFactory = random_token,
        cache_size: int = 10_000,
        cache_ttl: float = 30.0,
        sync_interval: float | None = 1.0,
        max_stale: float = 60.0,
        rate_limit_algorithm: Algorithm = "sliding_window",
        usage_interval: float | None = 10.0,
        analytics: bool = True,
        retention: Retention | None = None,
        metrics: bool = False,
        metrics_per_key: bool = False,
        redis_namespace: str = "keysentry",
    ) -> None:
        _check_options(
            database_url=database_url, store=store, limiter_url=limiter_url, limiter=limiter,
            rate_limit_algorithm=rate_limit_algorithm, max_stale=max_stale,
            usage_interval=usage_interval, retention=retention, redis_namespace=redis_namespace,
            limiter_timeout=limiter_timeout, clock=clock, token_factory=token_factory,
            cache_size=cache_size, cache_ttl=cache_ttl, sync_interval=sync_interval,
            analytics=analytics, metrics=metrics, metrics_per_key=metrics_per_key,
        )  # fmt: skip
        self.limiter_url = check_limiter_url(limiter_url)
        check_on_error(on_limiter_error)
        self.limiter: Limiter = limiter or limiter_from_url(
            self.limiter_url, timeout=limiter_timeout, on_error=on_limiter_error,
            key_prefix=f"{redis_namespace}:rl:",
        )  # fmt: skip
        self.store: KeyStore = store or store_from_url(database_url or DEFAULT_DATABASE_URL)
        self._clock = clock
        self._token_factory = token_factory
        cache = CachedKeyStore(
            self.store,
            maxsize=cache_size,
            ttl=cache_ttl,
            sync_interval=sync_interval,
            max_stale=max_stale,
            timer=clock,  # the clock of the checks: a request reads it once
            changes=changes_from_url(self.limiter_url, redis_namespace, limiter_timeout),
            entries=EntryBuilder(rate_limit_algorithm),
        )
        self.usage = UsageRecorder(
            self.store,
            interval=usage_interval,
            analytics=bool(analytics),
            retention=retention,
            clock=clock,
        )
        """Usage and ``last_used_at`` write-behind; :meth:`UsageRecorder.flush` writes now."""
        observer = _metrics(self.limiter, clock, metrics_per_key) if metrics else None
        self.metrics: Metrics | None = observer
        """The Prometheus metrics (``None`` unless ``metrics=True``)."""
        self.verifier = Verifier(cache, self.limiter, self.usage, clock, observer)
        """The verification drivers; the adapters call its methods."""
        self.verify_request = self.verifier.verify_request
        self._begin_call = self.verifier.begin_call
        self.averify_request = self.verifier.averify_request
        install_stop_handler()  # werkzeug's server and waitress would lose it on SIGTERM

    def __enter__(self) -> KeySentry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Write the pending ``last_used_at`` times, then release the store's connections,
        the limiter and the invalidation channel; publish and stop the metrics."""
        self.verifier.credits.drain()  # unspent leases go back to the store
        self.usage.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.cache.changes is not None:
            self.cache.changes.close()
        self.store.close()
        self.limiter.close()

    @property
    def cache(self) -> CachedKeyStore:
        """The in-process key cache in front of :attr:`store`."""
        return self.verifier.cache

    @cache.setter
    def cache(self, cache: CachedKeyStore) -> None:
        self.verifier.cache = cache

    async def aclose(self) -> None:
        """:meth:`close`, from an event loop: also closes the Redis limiter's asyncio
        connections of this loop cleanly (call it at application shutdown)."""
        await self.limiter.aclose()
        self.close()

    def verify(
        self,
        credential: str | None = None,
        *,
        method: str = "GET",
        path: str = "/",
        permissions: Sequence[str] | str = (),
        resource: str | None = None,
        api_key: str | None = None,
        client_ip: str | None = None,
        cost: int = 1,
    ) -> Decision:
        """Verify a presented key, as the adapters do for each request.

        Args:
            credential: the ``Authorization`` value (``"Bearer sk_live_…"``) or the bare key.
            method: the request method.
            path: the request path, as the router sees it; the default resource.
            permissions: every one must be granted by the key.
            resource: checked against the app's resource patterns instead of the path.
            api_key: an ``X-API-Key`` value, if the request had one.
            client_ip: the client's address (for per-IP rate limits and IP allowlists).
            cost: the credits the request spends when the key has credits (0: none).

        Returns:
            The verdict: ``allowed``, ``status``, ``reason``, ``identity``, ``headers``.
            Never raises for a wrong, malformed or missing key or an unreachable store
            (that is a 503 verdict).

        Raises:
            ValidationError: an argument of the wrong type (the text ones take a string,
                ``permissions`` a string or strings), or *cost* not an integer from 0 up;
                its ``fields`` name it.
        """
        check_types(credential, method, path, resource, api_key, client_ip)
        begin = self._begin_call  # called from a local, as KeySentryMiddleware calls quick
        begun = begin(credential, method, path, permissions, resource, api_key, client_ip, cost)
        if type(begun) is Decision:
            return begun
        return self.verifier.verify_request_general(*begun)

    async def averify(
        self,
        credential: str | None = None,
        *,
        method: str = "GET",
        path: str = "/",
        permissions: Sequence[str] | str = (),
        resource: str | None = None,
        api_key: str | None = None,
        client_ip: str | None = None,
        cost: int = 1,
    ) -> Decision:
        """:meth:`verify` for async callers: a cache hit stays on the event loop, a store
        read runs in a worker thread."""
        check_types(credential, method, path, resource, api_key, client_ip)
        begin = self._begin_call  # called from a local, as KeySentryMiddleware calls quick
        begun = begin(credential, method, path, permissions, resource, api_key, client_ip, cost)
        if type(begun) is Decision:
            return begun
        return await self.verifier.averify_request_general(*begun)

    # ------------------------------------------------------------ adapters
    def require(
        self,
        *permissions: str,
        resource: str | None = None,
        api_key_header: str | None = None,
        read_authorization: bool | None = None,
        cost: int = 1,
    ) -> Callable[[F], F]:
        """Decorate a Starlette, FastAPI or Flask handler (sync or async) so that it runs
        only for a key holding every one of *permissions* (and *resource*, a template such
        as ``"users/{user_id}"`` filled from the path parameters). With *api_key_header*
        (e.g. ``"X-API-Key"``) the key is read from that header instead of
        ``Authorization``; *read_authorization=True* accepts either. A key with credits
        spends *cost* of them (behind the middleware, which verified and spent already,
        set ``costs=`` there instead).

        Raises:
            ConfigurationError: a malformed permission, header name or cost.
        """
        from keysentry.decorators import require

        return require(self, permissions, resource, api_key_header, read_authorization, cost)

    def depends(
        self,
        *permissions: str,
        resource: str | None = None,
        api_key_header: str | None = None,
        read_authorization: bool | None = None,
        cost: int = 1,
    ) -> Callable[..., Any]:
        """A FastAPI dependency returning the verified :class:`Identity`; use it as
        ``Depends(ks.depends("users:read"))``. With *api_key_header* the key is read from
        that header instead of ``Authorization`` (declared in OpenAPI too);
        *read_authorization=True* accepts either; a key with credits spends *cost*. Needs
        ``keysentry[fastapi]``."""
        from keysentry.fastapi import dependency

        return dependency(self, permissions, resource, api_key_header, read_authorization,
                          cost)  # fmt: skip


def _check_options(
    *, database_url: str | None, store: KeyStore | None, limiter_url: str | None,
    limiter: Limiter | None, rate_limit_algorithm: str, max_stale: float,
    usage_interval: float | None, retention: Retention | None, redis_namespace: str,
    limiter_timeout: float, clock: object, token_factory: object, cache_size: int,
    cache_ttl: float, sync_interval: float | None, analytics: bool, metrics: bool,
    metrics_per_key: bool,
) -> None:  # fmt: skip
    """Refuse a bad :class:`KeySentry` argument before anything is opened or started, naming
    it: such a value would otherwise fail on some later request (a 503), or, for a truthy
    string such as ``analytics="no"``, silently mean the opposite."""
    if store is not None and database_url is not None:
        raise ConfigurationError("pass database_url or store, not both")
    if limiter is not None and limiter_url is not None:
        raise ConfigurationError("pass limiter_url or limiter, not both")
    if rate_limit_algorithm not in ("sliding_window", "fixed_window"):
        raise ConfigurationError("rate_limit_algorithm must be 'sliding_window' or 'fixed_window'")
    if not isinstance(redis_namespace, str) or not _NAMESPACE.fullmatch(redis_namespace):
        raise ConfigurationError("redis_namespace must be 1-64 of a-z, A-Z, 0-9, '_', '-' and '.'")
    if retention is not None and not isinstance(retention, Retention):
        raise ConfigurationError("retention must be a keysentry.usage.Retention")
    check_seconds("max_stale", max_stale, zero=True)
    check_seconds("usage_interval", usage_interval, or_none=True)
    check_seconds("limiter_timeout", limiter_timeout)
    # 0 is a choice for these two: no caching; the event log read before every request
    check_seconds("cache_ttl", cache_ttl, zero=True)
    check_seconds("sync_interval", sync_interval, zero=True, or_none=True)
    if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 1:
        raise ConfigurationError("cache_size must be an integer >= 1")
    for name, value in (("clock", clock), ("token_factory", token_factory)):
        if not callable(value):
            raise ConfigurationError(f"{name} must be callable")
    for name, flag in (("analytics", analytics), ("metrics", metrics),
                       ("metrics_per_key", metrics_per_key)):  # fmt: skip
        check_flag(name, flag)


def _metrics(limiter: Limiter, clock: Callable[[], float], per_key: bool) -> Metrics:
    from keysentry.metrics import Metrics  # prometheus_client: an optional extra

    observer = Metrics(per_key=per_key, clock=clock)
    observer.watch_limiter(limiter)
    return observer
