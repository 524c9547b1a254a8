"""A cold key's concurrent requests read the store once: the first caller reads, the others
wait for it and find its result in the cache; what it could not cache, they read anew."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import pytest

from keysentry import KeySentry
from keysentry.core.decision import Decision
from keysentry.core.keys import parse_key
from keysentry.errors import StoreError
from keysentry.testing import issue_key

CALLERS = 8


class HeldStore:
    """Wraps a real store: counts key reads and holds the first one until released
    (nothing is faked; *fail* makes the held read fail as an unreachable database does)."""

    def __init__(self, inner: Any, fail: bool = False) -> None:
        self.inner = inner
        self.fail = fail
        self.finds = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def find_candidates(self, prefix: str, suffix: str) -> Any:
        self.finds += 1
        found = self.inner.find_candidates(prefix, suffix)  # the rows as they are now
        if self.finds == 1:
            self.entered.set()
            assert self.release.wait(10)
            if self.fail:
                raise StoreError("postgresql store failed: connection refused")
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _hold(ks: KeySentry, fail: bool = False) -> HeldStore:
    store = HeldStore(ks.store, fail)
    ks.cache.store = store
    return store


def _when_all_wait(ks: KeySentry, secret: str, store: HeldStore, callers: int = CALLERS) -> None:
    """Release the held read once *callers* callers have joined it (the reader among them:
    the others are then waiting)."""
    digest = parse_key(secret).digest
    assert store.entered.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        read = ks.cache._reads.get(digest)
        if read is not None and read.callers == callers:
            break
        time.sleep(0.005)
    else:
        pytest.fail("the callers did not all join the read in progress")
    store.release.set()


def _burst(call: Callable[[], Decision]) -> tuple[list[Decision], list[threading.Thread]]:
    decisions: list[Decision] = []
    threads = [threading.Thread(target=lambda: decisions.append(call())) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    return decisions, threads


@pytest.mark.parametrize(("fail", "status"), [(False, 200), (True, 503)], ids=["read", "failed"])
def test_a_cold_keys_burst_reads_the_store_once(ks: KeySentry, fail: bool, status: int) -> None:
    # failed: the first read fails after its timeout; the others must not each try (and
    # wait) again, but see the outage it found
    secret = issue_key(ks).secret
    store = _hold(ks, fail)
    decisions, threads = _burst(lambda: ks.verify(secret))
    _when_all_wait(ks, secret, store)
    for thread in threads:
        thread.join(10)
    assert [d.status for d in decisions] == [status] * CALLERS
    assert store.finds == 1
    assert ks.cache._reads == {}  # nothing left behind


async def _until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until *condition* holds (10 s at most)."""
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the callers did not reach the expected state")
        await asyncio.sleep(0.005)


def test_async_callers_share_the_read_on_the_event_loop(ks: KeySentry) -> None:
    # one worker thread reads; the others wait on the loop, not each in a thread of AnyIO's
    # pool (40 by default, which a burst of one cold key could otherwise take whole)
    secret = issue_key(ks).secret
    digest = parse_key(secret).digest
    store = _hold(ks)

    async def burst() -> list[Decision]:
        calls = [asyncio.ensure_future(ks.averify(secret)) for _ in range(CALLERS)]
        await _until(
            lambda: store.entered.is_set() and ks.verifier.reads.waiting(digest) == CALLERS - 1
        )
        threads = anyio.to_thread.current_default_thread_limiter().borrowed_tokens
        store.release.set()
        decisions = await asyncio.gather(*calls)
        assert threads == 1
        return decisions

    decisions = asyncio.run(burst())
    assert [d.status for d in decisions] == [200] * CALLERS
    assert store.finds == 1
    assert ks.cache._reads == {}
    assert ks.verifier.reads.waiting(digest) == 0


def test_async_callers_waiting_on_a_read_a_revoke_overtook_read_the_key_anew(
    ks: KeySentry,
) -> None:
    issued = issue_key(ks)
    digest = parse_key(issued.secret).digest
    store = _hold(ks)

    async def burst() -> list[Decision]:
        calls = [asyncio.ensure_future(ks.averify(issued.secret)) for _ in range(CALLERS)]
        await _until(
            lambda: store.entered.is_set() and ks.verifier.reads.waiting(digest) == CALLERS - 1
        )
        ks.revoke_api_key(issued.key.id)  # the held read found the key before this
        store.release.set()
        return await asyncio.gather(*calls)

    reader, *waiters = asyncio.run(burst())
    # none takes what the held read found before the revoke: nothing was cached, so the first
    # of them reads the key once more and the rest find that in the cache
    assert [d.reason for d in waiters] == ["key_revoked"] * (CALLERS - 1)
    assert reader.reason in ("ok", "key_revoked")
    assert store.finds == 2


def test_a_cancelled_reader_or_waiter_leaves_the_others_their_answer(ks: KeySentry) -> None:
    secret = issue_key(ks).secret
    digest = parse_key(secret).digest
    store = _hold(ks)

    async def burst() -> list[Decision | BaseException]:
        reader = asyncio.ensure_future(ks.averify(secret))
        await _until(store.entered.is_set)
        calls = [asyncio.ensure_future(ks.averify(secret)) for _ in range(CALLERS - 1)]
        await _until(lambda: ks.verifier.reads.waiting(digest) == CALLERS - 1)
        reader.cancel()
        calls[0].cancel()
        await asyncio.sleep(0.05)  # the cancellations delivered, however AnyIO takes them
        store.release.set()
        return await asyncio.gather(reader, *calls, return_exceptions=True)

    reader, waiter, *others = asyncio.run(burst())
    assert isinstance(waiter, asyncio.CancelledError)
    assert [d.status for d in others if isinstance(d, Decision)] == [200] * (CALLERS - 2)
    assert store.finds == 1  # the cancelled reader's thread still read, and cached
    assert ks.cache._reads == {}
    assert not isinstance(reader, Decision) or reader.status == 200


def test_callers_waiting_on_a_read_a_revoke_overtook_read_the_key_anew(ks: KeySentry) -> None:
    # the held read found the key before the revoke, and a revoke while a read is in
    # progress keeps it from caching anything: the callers that waited for it must not take
    # its answer, but read the revoked key (the first of them; the rest find it cached)
    issued = issue_key(ks)
    store = _hold(ks)
    reader = threading.Thread(target=ks.verify, args=(issued.secret,))
    reader.start()
    assert store.entered.wait(10)
    ks.revoke_api_key(issued.key.id)
    later, threads = _burst(lambda: ks.verify(issued.secret))
    _when_all_wait(ks, issued.secret, store, CALLERS + 1)
    reader.join(10)
    for thread in threads:
        thread.join(10)
    assert [d.reason for d in later] == ["key_revoked"] * CALLERS
    assert store.finds == 2
    assert ks.cache._reads == {}
