"""The Redis limiter on a Redis Cluster."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keysentry.core.ratelimit import Limit
from keysentry.limiters._redis_connections import redis_errors
from keysentry.limiters._redis_script import SCRIPT, SHA
from keysentry.limiters.redis import RedisLimiter

__all__ = ["RedisClusterLimiter"]


class RedisClusterLimiter(RedisLimiter):
    """:class:`RedisLimiter` on a Redis Cluster (``redis+cluster://host:7000,host:7001``).

    Every counter of one request carries the app's hash tag, so the whole script runs on the
    one node that owns the app's slot, in one round trip; redis-py's cluster client finds
    that node and follows ``MOVED``/``ASK`` while slots migrate. A node that fails is left
    alone (and answered per *on_error*) for its own slots only: the other nodes' apps keep
    exact limits. Run the cluster with ``cluster-require-full-coverage no``, or a master
    without a replica stops the whole cluster when it fails.
    """

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)  # checks that redis is installed
        from redis.crc import key_slot  # resolved once: an import statement costs per call

        self._key_slot = key_slot

    def _scope(self, checks: Sequence[tuple[Limit, str]]) -> int | None:
        return int(self._key_slot((self._prefix + checks[0][1]).encode()))

    def _send(self, checks: Sequence[tuple[Limit, str]], now_ms: int) -> bytes:
        keys, args = self._arguments(checks, now_ms)
        client = self._sync_client()
        try:
            reply: bytes = client.execute_command("EVALSHA", SHA, len(keys), *keys, *args)
        except redis_errors.NoScriptError:  # this node has not seen the script: EVAL caches it
            reply = client.execute_command("EVAL", SCRIPT, len(keys), *keys, *args)
        return reply

    async def _asend(self, checks: Sequence[tuple[Limit, str]], now_ms: int) -> bytes:
        keys, args = self._arguments(checks, now_ms)
        client, _, _ = self._async_client()
        try:
            reply: bytes = await client.execute_command("EVALSHA", SHA, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            reply = await client.execute_command("EVAL", SCRIPT, len(keys), *keys, *args)
        return reply
