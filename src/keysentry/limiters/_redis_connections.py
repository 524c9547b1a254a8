"""What the Redis limiter does with redis-py's connections and errors: which failures mean
a connection is dead, one retry after Redis closed an idle one, the replies of a command
sent behind ``SCRIPT LOAD``. Importing it needs no redis (an optional extra)."""

from __future__ import annotations

from typing import Any

__all__ = ["adrop", "after_load", "connection_dead", "redis_errors", "stale_after", "take_all"]


class RedisErrors:
    """redis-py's exception classes, imported when the first limiter is made (redis is an
    optional extra: importing this module must not need it)."""

    NoScriptError: type[BaseException]
    ConnectionError: type[BaseException]
    ReadOnlyError: type[BaseException]

    def bind(self) -> None:
        from redis import exceptions

        self.NoScriptError = exceptions.NoScriptError
        self.ConnectionError = exceptions.ConnectionError
        self.ReadOnlyError = exceptions.ReadOnlyError


redis_errors = RedisErrors()


def connection_dead(exc: BaseException) -> bool:
    """Whether *exc* says the connection is no use any more: closed (not a timeout), or to a
    server that became a replica (a Sentinel failover; a new connection finds the primary)."""
    return isinstance(exc, redis_errors.ConnectionError | redis_errors.ReadOnlyError)


def stale_after(exc: BaseException, reused: bool, idle: list[Any]) -> list[Any]:
    """After a call failed with *exc*: re-raise it, unless the connection was an idle one
    that Redis had closed (a restart); then the call is worth one retry on a new connection,
    and the other idle connections went with it: they are returned, to be dropped."""
    if not (reused and connection_dead(exc)):
        raise exc
    return take_all(idle)


def after_load(load_reply: Any, reply: bytes) -> bytes:
    """The reply of a command sent right after ``SCRIPT LOAD``, in one round trip."""
    del load_reply  # the script's SHA, which SHA already is
    return reply


def take_all(idle: list[Any]) -> list[Any]:
    """Empty *idle* and return what it held (pop() by pop(): other threads may be taking
    from it at the same time)."""
    taken = []
    while True:
        try:
            taken.append(idle.pop())
        except IndexError:
            return taken


async def adrop(client: Any, connection: Any) -> None:
    await connection.disconnect(nowait=True)
    await client.connection_pool.release(connection)
