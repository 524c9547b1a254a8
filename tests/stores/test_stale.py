"""While the store is unreachable: verified keys for at most max_stale, 503 for the rest,
the store asked once per retry interval, exact service once it is back (docs/design.md §7)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from keysentry import ConfigurationError, KeySentry, StoreError
from keysentry.stores.cached import CachedKeyStore
from keysentry.testing import issue_key
from tests.stores.test_sync import Timer


class Outage:
    """A real store that can be made unreachable, reads and lookups alike; counts attempts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False
        self.attempts = 0

    def _gate(self) -> None:
        self.attempts += 1
        if self.down:
            raise StoreError("postgresql store failed: connection refused")

    def read(self) -> Any:
        self._gate()
        return self.inner.read()

    def find_keys(self, prefix: str, suffix: str) -> Any:
        self._gate()
        return self.inner.find_keys(prefix, suffix)

    def find_candidates(self, prefix: str, suffix: str) -> Any:
        self._gate()
        return self.inner.find_candidates(prefix, suffix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class World:
    def __init__(self, sql_url: str, *, max_stale: float = 60.0, ttl: float = 30.0) -> None:
        self.timer = Timer()
        self.ks = KeySentry(sql_url)
        self.other = KeySentry(sql_url)  # another process, on the same database
        self.store = Outage(self.ks.store)
        self.ks.cache = CachedKeyStore(
            self.store,
            sync_interval=1.0,
            ttl=ttl,
            timer=self.timer,
            max_stale=max_stale,  # type: ignore[arg-type]
        )

    def status(self, secret: str) -> int:
        return self.ks.verify(secret).status

    def close(self) -> None:
        self.ks.close()
        self.other.close()


@pytest.fixture
def world(sql_url: str) -> Iterator[World]:
    w = World(sql_url)
    yield w
    w.close()


def test_verified_keys_last_max_stale_then_503(world: World) -> None:
    key = issue_key(world.other).secret
    assert world.status(key) == 200
    world.store.down = True
    world.timer.now += 59  # the TTL (30 s) has passed: served from the stale copy
    assert world.status(key) == 200
    world.timer.now += 2  # 61 s since it was last confirmed
    assert world.status(key) == 503


def test_unknown_and_uncached_keys_get_503_never_200(world: World) -> None:
    known = issue_key(world.other).secret
    world.store.down = True
    world.timer.now += 1.1
    assert world.status(known) == 503  # valid, but never verified by this process
    assert world.status(known[:-6] + "AAAAAA") == 401  # bad checksum: no lookup needed
    unknown = issue_key(KeySentry("memory://")).secret  # well-formed, in no store here
    assert world.status(unknown) == 503


def test_a_down_store_is_asked_once_per_retry_interval(world: World) -> None:
    key = issue_key(world.other).secret
    world.store.down = True
    world.timer.now += 1.1
    before = world.store.attempts
    for _ in range(50):
        assert world.status(key) == 503
    assert world.store.attempts - before <= 2  # the sync and one lookup, then left alone
    world.timer.now += 1.1
    world.status(key)
    assert world.store.attempts - before <= 4


def test_exact_service_resumes_with_changes_made_meanwhile(world: World) -> None:
    kept = issue_key(world.other)
    revoked = issue_key(world.other)
    for issued in (kept, revoked):
        assert world.status(issued.secret) == 200
    world.store.down = True  # unreachable from this process only, as in a partition
    world.other.revoke_api_key(revoked.key.id)
    world.timer.now += 5
    assert world.status(revoked.secret) == 200  # stale, within the bound
    world.store.down = False
    world.timer.now += 1.1  # the next retry reads the event log from where it stopped
    assert world.status(revoked.secret) == 403
    assert world.status(kept.secret) == 200


def test_a_sync_confirms_what_is_cached(world: World) -> None:
    key = issue_key(world.other).secret
    assert world.status(key) == 200  # loaded at t
    for _ in range(40):  # the event log is read every second: the entry stays confirmed
        world.timer.now += 1.1
        assert world.status(key) == 200
    world.store.down = True
    world.timer.now += 50  # 94 s after loading, but 50 s after the last successful sync
    assert world.status(key) == 200
    world.timer.now += 11
    assert world.status(key) == 503


def test_max_stale_zero_refuses_once_the_outage_is_seen(sql_url: str) -> None:
    w = World(sql_url, max_stale=0)
    try:
        key = issue_key(w.other).secret
        assert w.status(key) == 200
        w.store.down = True
        w.timer.now += 1.1  # the next request reads the log, fails, and trusts nothing
        assert w.status(key) == 503
    finally:
        w.close()


def test_in_process_revocation_is_not_undone_by_the_stale_copy(world: World) -> None:
    issued = issue_key(world.ks)
    assert world.status(issued.secret) == 200
    world.ks.revoke_api_key(issued.key.id)  # evicts the cache and the stale copy
    world.store.down = True
    world.timer.now += 1.1
    assert world.status(issued.secret) == 503  # not the stale 200


@pytest.mark.parametrize("change", ["revoke", "rotate"])
def test_a_change_reaches_every_copy_whatever_the_cache_history(sql_url: str, change: str) -> None:
    # A small cache and TTL: entries leave the TTL cache while their outage copies stay,
    # and the key-id index is rebuilt many times over. A revoke or rotate made by another
    # process, arriving through the event log, must still reach the outage copy.
    timer = Timer()
    ks, other = KeySentry(sql_url), KeySentry(sql_url)
    store = Outage(ks.store)
    ks.cache = CachedKeyStore(store, maxsize=4, ttl=5.0, sync_interval=1.0, timer=timer)
    try:
        keys = [issue_key(ks, app_slug=f"app-{i % 3}") for i in range(13)]
        target = keys[0]
        assert ks.verify(target.secret).status == 200
        timer.now += 6  # its TTL entry has expired; the outage copy is all that is left
        for _ in range(2):
            for issued in keys[1:]:
                store.down = True
                timer.now += 1.1
                assert ks.verify(target.secret).status == 200  # the outage copy, in use
                store.down = False
                timer.now += 1.1
                assert ks.verify(issued.secret).status == 200  # loads and indexes another
        if change == "revoke":
            other.revoke_api_key(target.key.id)
        else:
            other.rotate_api_key(target.key.id)
        timer.now += 1.1
        assert ks.verify(keys[1].secret).status == 200  # reads the event log: evicts
        store.down = True
        timer.now += 1.1
        assert ks.verify(target.secret).status == 503  # never the old 200
    finally:
        ks.close()
        other.close()


@pytest.mark.parametrize("value", [-1, "60", True])
def test_max_stale_is_validated(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_stale"):
        KeySentry("memory://", max_stale=value)
