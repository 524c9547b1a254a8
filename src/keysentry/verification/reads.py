"""Cold reads shared by async callers on their event loop.

A key missing from the cache is read from the store in a worker thread. The threads of one
process already share a read of the same key (``CachedKeyStore.load``), but an async caller
would hold a worker thread while it waits for another's read: a burst of requests with one
cold key could take AnyIO's whole pool (40 threads by default), which sync endpoints and file
I/O need too. Here the burst's first caller reads, in one thread; the others wait on the
event loop, then look in the cache again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

__all__ = ["SharedReads", "in_thread"]

T = TypeVar("T")
A = TypeVar("A")


async def in_thread(function: Callable[[A], T], argument: A) -> T:
    """``function(argument)`` in one of AnyIO's worker threads."""
    # imported here: sync callers never need anyio; beside a thread hop, the import is free
    from anyio import to_thread  # starlette's dependency

    return await to_thread.run_sync(function, argument)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # trio, or another library: its callers read alone, as threads do
        return None


class SharedReads:
    """The store reads that async callers have in progress, by key digest, each with the
    event loop it runs on (a caller on another loop does not wait for it)."""

    def __init__(self) -> None:
        self._reads: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}
        self._waiting: dict[str, int] = {}

    async def wait(self, digest: str) -> bool:
        """Wait until the read of *digest* in progress on this event loop ends, if there is
        one; return whether there was. Cancelling the waiter leaves the read alone."""
        read = self._reads.get(digest)
        if read is None or read[0] is not _running_loop():
            return False
        self._waiting[digest] = self._waiting.get(digest, 0) + 1
        try:
            await asyncio.shield(read[1])
        finally:
            left = self._waiting[digest] - 1
            if left:
                self._waiting[digest] = left
            else:
                del self._waiting[digest]
        return True

    def waiting(self, digest: str) -> int:
        """How many callers wait for the read of *digest* (for tests and monitoring)."""
        return self._waiting.get(digest, 0)

    @asynccontextmanager
    async def reading(self, digest: str) -> AsyncIterator[None]:
        """Mark the read of *digest* that the ``async with`` body does as in progress, so
        others wait for it; they are woken however the body ends (an error, a cancel)."""
        loop = _running_loop()
        if loop is None or digest in self._reads:  # another loop's read is in progress
            yield
            return
        done = loop.create_future()
        self._reads[digest] = (loop, done)
        try:
            yield
        finally:
            del self._reads[digest]
            done.set_result(None)
