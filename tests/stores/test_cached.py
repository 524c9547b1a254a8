"""The in-process cache: hits without I/O, same-process eviction, the in-flight race."""

from __future__ import annotations

import threading

import pytest

from keysentry import KeySentry
from keysentry.core.keys import checksum, parse_key
from keysentry.core.pipeline import LookupKey
from keysentry.stores.cached import MISS, CachedKeyStore
from keysentry.testing import issue_key


class CountingStore:
    """Wraps a real store and counts what verification asks of it (nothing is faked)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.finds = 0

    def find_candidates(self, prefix: str, suffix: str) -> object:
        self.finds += 1
        return self.inner.find_candidates(prefix, suffix)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_second_verify_is_a_cache_hit_and_bad_keys_are_cached_briefly(
    ks: KeySentry,
) -> None:
    store = CountingStore(ks.store)
    with KeySentry(store=store) as ks:  # type: ignore[arg-type]
        secret = issue_key(ks).secret
        assert ks.verify(secret).allowed
        assert ks.verify(secret).allowed
        assert store.finds == 1
        # same prefix, another secret, a valid checksum (and never the real key by chance)
        head = secret[:-10] + ("AAAA" if secret[-10:-6] != "AAAA" else "BBBB")
        unknown = head + checksum(head)
        assert ks.verify(unknown).status == 401
        assert ks.verify(unknown).status == 401
        assert store.finds == 2  # the negative cache answered the second time
        assert ks.verify("Bearer sk_test_garbage").status == 401
        assert store.finds == 2  # malformed: refused before any lookup


@pytest.mark.parametrize("action", ["revoke", "rotate", "delete_app", "disable_app"])
def test_same_process_changes_refuse_the_very_next_request_every_time(
    action: str,
) -> None:
    ks = KeySentry("memory://")
    slips = 0
    for i in range(200):  # as the cache fills: an answer must not depend on its contents
        app_slug = f"app-{i}"
        issued = issue_key(ks, app_slug=app_slug)
        assert ks.verify(issued.secret).allowed  # now cached
        if action == "revoke":
            ks.revoke_api_key(issued.key.id)
        elif action == "rotate":
            ks.rotate_api_key(issued.key.id)
        elif action == "delete_app":
            ks.delete_api_auth_app(app_slug)
        else:
            ks.update_api_auth_app(app_slug, is_active=False)
        if ks.verify(issued.secret).allowed:
            slips += 1
    assert slips == 0


def test_a_load_in_flight_during_a_revoke_does_not_refill_the_cache(ks: KeySentry) -> None:
    issued = issue_key(ks)
    parsed = parse_key(issued.secret)
    effect = LookupKey(parsed.prefix, parsed.secret, parsed.digest)
    entered, release = threading.Event(), threading.Event()
    real_find = ks.store.find_candidates

    def slow_find(prefix: str, suffix: str) -> object:
        found = real_find(prefix, suffix)  # reads the key while it is still valid
        entered.set()
        release.wait(10)
        return found

    ks.cache.store = type(
        "Slow", (), {"find_candidates": staticmethod(slow_find), "read": ks.store.read}
    )()  # type: ignore[assignment]
    loader = threading.Thread(target=ks.cache.load, args=(effect,))
    loader.start()
    assert entered.wait(10)
    ks.revoke_api_key(issued.key.id)  # lands while the load holds the old record
    release.set()
    loader.join(10)
    ks.cache.store = ks.store
    assert ks.cache.get(parsed.digest) is MISS  # the stale record was not cached
    assert ks.verify(issued.secret).reason == "key_revoked"


def test_scheme_change_clears_compiled_rules() -> None:
    ks = KeySentry("memory://")
    ks.create_rate_limit_scheme("s1", "S", [{"unit": "minute", "max_requests": 5}])
    issued = issue_key(ks, rate_limit_scheme_slug="s1")
    parsed = parse_key(issued.secret)
    ks.verify(issued.secret)
    entry = ks.cache.get(parsed.digest)
    assert entry is not MISS
    assert entry.limits[0].max_requests == 5  # type: ignore[union-attr]
    ks.update_rate_limit_scheme("s1", rules=[{"unit": "minute", "max_requests": 7}])
    assert ks.cache.get(parsed.digest) is MISS
    ks.verify(issued.secret)
    assert ks.cache.get(parsed.digest).limits[0].max_requests == 7  # type: ignore[union-attr]


def test_eviction_index_survives_cache_churn() -> None:
    # A tiny cache: TTLCache drops entries by LRU without telling the index; the index must
    # still evict exactly the right key and stay bounded.
    ks = KeySentry("memory://", cache_size=4)
    issued = [issue_key(ks, app_slug=f"app-{i % 3}") for i in range(30)]
    for item in issued:
        assert ks.verify(item.secret).allowed
    assert len(ks.cache._digests) <= 3 * 4 + 1
    target = issued[-1]
    ks.revoke_api_key(target.key.id)
    assert ks.verify(target.secret).reason == "key_revoked"
    assert all(ks.verify(i.secret).allowed for i in issued[-4:-1])


def test_one_caller_at_a_time_is_sent_to_read_the_event_log(ks: KeySentry) -> None:
    # Under load, every request that arrives while the log is due would otherwise leave the
    # event loop for a store read; one is sent, the others are answered from the cache.
    now = [1000.0]
    store = CountingStore(ks.store)
    cache = CachedKeyStore(store, sync_interval=1.0, timer=lambda: now[0])  # type: ignore[arg-type]
    parsed = parse_key(issue_key(ks).secret)
    effect = LookupKey(parsed.prefix, parsed.secret, parsed.digest)
    assert cache.get(parsed.digest) is MISS
    entry = cache.load(effect)
    assert entry is not None
    assert store.finds == 1
    now[0] += 1.5  # the log is due again
    assert cache.get(parsed.digest) is MISS  # this caller reads it
    assert cache.get(parsed.digest) is entry  # the others are not held up
    assert cache.get(parsed.digest) is entry
    assert cache.load(effect) is entry  # the log was read; the key came from the cache
    assert store.finds == 1
    now[0] += 1.5
    assert cache.get(parsed.digest) is MISS  # sent, but it never reads (say, cancelled)
    now[0] += 0.5
    assert cache.get(parsed.digest) is entry
    now[0] += 0.6
    assert cache.get(parsed.digest) is MISS  # after a second another caller is sent
