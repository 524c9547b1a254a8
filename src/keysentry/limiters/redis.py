"""The Redis limiter: exact limits across every worker and machine that shares one Redis.

Each request's rules are decided in **one round trip**: one Lua script
(:mod:`keysentry.limiters._redis_script`) reads every counter, checks them all, and only if
all admit the request counts it against all of them. Time comes from Redis (``TIME``), so
the machines' clocks need not agree. The script decides only *whether* to admit; remaining
quota and ``Retry-After`` come from :mod:`keysentry.core.ratelimit`, the code the in-process
limiter uses, so the two agree by construction.

When Redis cannot be reached, ``on_error`` decides (``"open"``, ``"closed"``, ``"local"``:
docs/deployment.md), and Redis is left alone for ``retry_after`` seconds, so an outage costs
one timeout per half second, not one per request. Authentication never depends on Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final

from keysentry._redis import async_client, parse_redis_url, sentinels_of, sync_client
from keysentry.core.pipeline import UNAVAILABLE, LimiterAnswer
from keysentry.core.ratelimit import Limit, Outcome, decide_limits
from keysentry.errors import ConfigurationError
from keysentry.limiters._redis_connections import (
    adrop,
    after_load,
    redis_errors,
    stale_after,
    take_all,
)
from keysentry.limiters._redis_script import LOAD, SHA, resp, spec
from keysentry.limiters.base import OnError, check_on_error
from keysentry.limiters.memory import MemoryLimiter

__all__ = ["KEY_PREFIX", "RedisLimiter"]

logger = logging.getLogger("keysentry")

#: Prepended to every counter name.
KEY_PREFIX: Final = "keysentry:rl:"


_LIMITERS: weakref.WeakSet[RedisLimiter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for limiter in list(_LIMITERS):
        limiter._forget_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RedisLimiter:
    """Rate-limit counters in Redis, shared by every process that uses the same *url*.

    Args:
        url: ``redis://host:6379/0``, ``rediss://…`` or ``unix://…``.
        timeout: seconds to wait for a connection and for each reply.
        on_error: ``"open"``, ``"closed"`` or ``"local"``: what to do when Redis fails.
        retry_after: seconds to leave Redis alone after a failure.
        key_prefix: prepended to every counter name.
        redis_time: take the time from Redis (default). ``False`` uses the time the caller
            passes (``KeySentry``'s clock): for tests with a fake clock.

    Needs ``keysentry[redis]``. Connections are made on first use, so a limiter created
    before a server forks its workers opens none in the parent.
    """

    remote = True

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.1,
        on_error: OnError = "open",
        retry_after: float = 0.5,
        key_prefix: str = KEY_PREFIX,
        redis_time: bool = True,
    ) -> None:
        if not isinstance(timeout, int | float) or not 0 < timeout <= 60:
            raise ConfigurationError("limiter_timeout must be a number of seconds in (0, 60]")
        try:
            import redis  # noqa: F401  (an optional extra)
        except ImportError:
            raise ConfigurationError(
                "limiter_url='redis://…' needs the redis extra: pip install 'keysentry[redis]'"
            ) from None
        self.url = url
        self._target = parse_redis_url(url)
        self.on_error: OnError = check_on_error(on_error)
        self._timeout = float(timeout)
        self._retry_after = retry_after
        self._prefix = key_prefix
        self._redis_time = redis_time
        self._local = MemoryLimiter()
        self._lock = threading.Lock()
        self._client: Any = None
        self._idle: list[Any] = []  # connections of the sync client, free for a call
        self._async: dict[int, tuple[Any, Any, list[Any]]] = {}  # id(loop) -> client, loop, idle
        # id(checks) -> (checks, the packed command): a cached key's checks are one tuple
        self._commands: dict[int, tuple[Sequence[tuple[Limit, str]], bytes]] = {}
        # scope -> the time before which Redis is left alone there: one scope (None) for a
        # server, one per hash slot in a cluster, where a node's failure is its slots' alone
        self._down: dict[int | None, float] = {}
        self.on_failure: Callable[[], None] | None = None
        """Called on each failed call to Redis (the metrics count them)."""
        redis_errors.bind()
        _LIMITERS.add(self)

    # ------------------------------------------------------------ clients
    def _options(self, asynchronous: bool = False) -> dict[str, Any]:
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One attempt: retrying would multiply the timeout on every request of an outage.
        # An asyncio client wants its own Retry (redis-py 8 converts a sync one, warning).
        retry = AsyncRetry(NoBackoff(), 0) if asynchronous else Retry(NoBackoff(), 0)
        return {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "retry": retry,
        }

    def _sync_client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = sync_client(self._target, **self._options())
        return self._client

    def _async_client(self) -> tuple[Any, Any, list[Any]]:
        # redis.asyncio connections belong to the event loop that opened them.
        loop = asyncio.get_running_loop()
        entry = self._async.get(id(loop))
        if entry is None or entry[1] is not loop:
            entry = (async_client(self._target, **self._options(asynchronous=True)), loop, [])
            if len(self._async) > 8:  # loops come and go in tests; keep a few
                self._async.clear()
            self._async[id(loop)] = entry
        return entry

    def _forget_connections(self) -> None:
        """In a child process after fork(): the parent's connections are not ours to use
        (nor to close: the parent still talks on them)."""
        self._client = None
        self._idle = []
        self._async = {}

    # The script is run by its SHA (EVALSHA), and loaded when Redis answers that it does
    # not know it (a new, restarted or flushed server). The command is packed once per set
    # of counters (:meth:`_command`), and run on a connection of our own idle list: redis-py's
    # pool checks every connection it lends with a poll() system call and records metrics on
    # each checkout and return, about 11 us a call, and its Script object and execute_command
    # add layers of retries we do not use (one attempt, see _options). The list's pop() and
    # append() are atomic, so threads share it without a lock; new connections come from the
    # pool. A connection whose reply may be half read is disconnected, never reused.
    #
    # Without the pool's poll() a connection that Redis closed (a restart) is found dead only
    # when it is used: that one call is tried again at once on a new connection, and every
    # other idle connection is dropped with it. Only a call that failed on the connection
    # (not a timeout) is retried: a script that ran and whose reply was lost to a crash is
    # counted twice, in the safe direction, and that is the worst case.
    def eval(self, keys: list[str], args: list[int | str]) -> bytes:
        """Run the script once (one round trip) and return its raw reply."""
        return self._run(resp("EVALSHA", SHA, len(keys), *keys, *args))

    async def aeval(self, keys: list[str], args: list[int | str]) -> bytes:
        """:meth:`eval` with the asyncio client of the running event loop."""
        return await self._arun(resp("EVALSHA", SHA, len(keys), *keys, *args))

    def _run(self, command: bytes) -> bytes:
        idle = self._idle
        try:
            connection, reused = idle.pop(), True
        except IndexError:
            connection, reused = self._sync_client().connection_pool.get_connection(), False
        try:
            connection.send_packed_command((command,), check_health=False)
            try:
                reply: bytes = connection.read_response()
            except redis_errors.NoScriptError:
                connection.send_packed_command((LOAD + command,), check_health=False)
                reply = after_load(connection.read_response(), connection.read_response())
        except BaseException as exc:
            self._drop(connection)
            for stale in stale_after(exc, reused, idle):  # raises unless worth a retry
                self._drop(stale)
            return self._run(command)
        idle.append(connection)
        return reply

    def _drop(self, connection: Any) -> None:
        connection.disconnect()
        if self._client is not None:
            self._client.connection_pool.release(connection)

    async def _arun(self, command: bytes) -> bytes:
        client, _, idle = self._async_client()
        try:
            connection, reused = idle.pop(), True
        except IndexError:
            connection, reused = await client.connection_pool.get_connection(), False
        try:
            await connection.send_packed_command((command,), check_health=False)
            try:
                reply: bytes = await connection.read_response()
            except redis_errors.NoScriptError:
                await connection.send_packed_command((LOAD + command,), check_health=False)
                reply = after_load(
                    await connection.read_response(), await connection.read_response()
                )
        except BaseException as exc:  # a cancelled request too: its reply would be read later
            await adrop(client, connection)
            for stale in stale_after(exc, reused, idle):
                await adrop(client, stale)
            return await self._arun(command)
        idle.append(connection)
        return reply

    # --------------------------------------------------------- the check
    def _arguments(
        self, checks: Sequence[tuple[Limit, str]], now_ms: int
    ) -> tuple[list[str], list[int | str]]:
        keys = [self._prefix + counter for _, counter in checks]
        args: list[int | str] = [-1 if self._redis_time else now_ms]
        for limit, _ in checks:
            args.append(spec(limit))
        return keys, args

    def _command(self, checks: Sequence[tuple[Limit, str]], now_ms: int) -> bytes:
        """The packed EVALSHA for *checks*: built once per checks tuple when the time comes
        from Redis (then nothing in it changes from one request to the next)."""
        if self._redis_time:
            known = self._commands.get(id(checks))
            if known is not None and known[0] is checks:
                return known[1]
        keys, args = self._arguments(checks, now_ms)
        command = resp("EVALSHA", SHA, len(keys), *keys, *args)
        if self._redis_time:
            if len(self._commands) >= 1024:  # tuples planned per request come and go
                self._commands.clear()
            self._commands[id(checks)] = (checks, command)  # holding checks keeps its id
        return command

    @staticmethod
    def _outcomes(
        checks: Sequence[tuple[Limit, str]], reply: bytes
    ) -> tuple[bool, tuple[Outcome, ...]]:
        now_ms, admitted, *numbers = map(int, reply.split())
        counts = [(numbers[2 * i], numbers[2 * i + 1]) for i in range(len(checks))]
        allowed, outcomes = decide_limits([limit for limit, _ in checks], counts, now_ms)
        if allowed != bool(admitted):  # the script is the authority; say if we disagree
            logger.error("keysentry: the Redis limiter and core.ratelimit disagree: %r", reply)
            allowed = not allowed
        return allowed, outcomes

    def hit(self, checks: Sequence[tuple[Limit, str]], now_ms: int) -> LimiterAnswer:
        """Check and count one request against every ``(limit, counter)`` in one round trip.

        Returns ``(allowed, outcomes)``, or on a Redis failure what *on_error* says.
        """
        scope = self._scope(checks)
        if self._down and time.monotonic() < self._down.get(scope, 0.0):
            return self._fallback(checks, now_ms)
        try:
            reply = self._send(checks, now_ms)
        except Exception as exc:  # redis errors, OSError, timeouts: the policy decides
            return self._failed(exc, scope, checks, now_ms)
        if self._down:
            self._recovered(scope)
        return self._outcomes(checks, reply)

    async def ahit(self, checks: Sequence[tuple[Limit, str]], now_ms: int) -> LimiterAnswer:
        """:meth:`hit` on the running event loop, with redis-py's asyncio client."""
        scope = self._scope(checks)
        if self._down and time.monotonic() < self._down.get(scope, 0.0):
            return self._fallback(checks, now_ms)
        try:
            reply = await self._asend(checks, now_ms)
        except Exception as exc:
            return self._failed(exc, scope, checks, now_ms)
        if self._down:
            self._recovered(scope)
        return self._outcomes(checks, reply)

    def _scope(self, checks: Sequence[tuple[Limit, str]]) -> int | None:
        """Where a failure of this request's call counts: everywhere, for one server."""
        return None

    def _send(self, checks: Sequence[tuple[Limit, str]], now_ms: int) -> bytes:
        return self._run(self._command(checks, now_ms))

    async def _asend(self, checks: Sequence[tuple[Limit, str]], now_ms: int) -> bytes:
        return await self._arun(self._command(checks, now_ms))

    # ------------------------------------------------------------ failure
    def _failed(
        self,
        exc: BaseException,
        scope: int | None,
        checks: Sequence[tuple[Limit, str]],
        now_ms: int,
    ) -> LimiterAnswer:
        if self.on_failure is not None:
            self.on_failure()
        if scope not in self._down:
            where = "" if scope is None else f" for hash slot {scope}"
            logger.warning(
                "keysentry: the Redis limiter failed%s (%s: %s); on_limiter_error=%r until it "
                "answers again",
                where,
                type(exc).__name__,
                exc,
                self.on_error,
            )
        self._down[scope] = time.monotonic() + self._retry_after
        return self._fallback(checks, now_ms)

    def _recovered(self, scope: int | None) -> None:
        if self._down.pop(scope, None) is not None:
            where = "" if scope is None else f" for hash slot {scope}"
            logger.warning("keysentry: the Redis limiter answers again%s", where)

    def _fallback(self, checks: Sequence[tuple[Limit, str]], now_ms: int) -> LimiterAnswer:
        if self.on_error == "local":
            return self._local.hit(checks, now_ms)
        if self.on_error == "closed":
            return UNAVAILABLE
        return True, ()

    @property
    def available(self) -> bool:
        """Whether the last calls reached Redis (``False`` while any part is failing)."""
        return not self._down

    async def aclose(self) -> None:
        """Close the asyncio client of the running event loop."""
        entry = self._async.pop(id(asyncio.get_running_loop()), None)
        if entry is not None:
            for connection in take_all(entry[2]):
                await adrop(entry[0], connection)
            await entry[0].aclose()
            for sentinel in sentinels_of(entry[0]):
                await sentinel.aclose()

    def close(self) -> None:
        """Close the sync client, and forget the asyncio ones (call :meth:`aclose` on their
        event loops to close them cleanly)."""
        if self._client is not None:
            for connection in take_all(self._idle):
                self._drop(connection)
            self._client.close()
            for sentinel in sentinels_of(self._client):
                sentinel.close()
            self._client = None
        self._async.clear()
        self._local.close()
