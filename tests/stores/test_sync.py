"""Changes made by another process reach this one through the event log (docs/design.md §7)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from keysentry import KeySentry, StoreError
from keysentry.stores.cached import CachedKeyStore
from keysentry.testing import issue_key


class Timer:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def two(sql_url: str) -> Iterator[tuple[KeySentry, KeySentry, Timer]]:
    """'app' serves requests (its cache on a fake timer); 'admin' is another process."""
    app, admin, timer = KeySentry(sql_url), KeySentry(sql_url), Timer()
    app.cache = CachedKeyStore(app.store, sync_interval=1.0, ttl=3600, timer=timer)
    yield app, admin, timer
    app.close()
    admin.close()


CHANGES: dict[str, Callable[[KeySentry, str, str], object]] = {
    "revoke": lambda ks, key_id, slug: ks.revoke_api_key(key_id),
    "rotate": lambda ks, key_id, slug: ks.rotate_api_key(key_id),
    "delete app": lambda ks, key_id, slug: ks.delete_api_auth_app(slug),
    "disable app": lambda ks, key_id, slug: ks.update_api_auth_app(slug, is_active=False),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_elsewhere_is_refused_after_one_sync_interval(
    two: tuple[KeySentry, KeySentry, Timer], change: str
) -> None:
    app, admin, timer = two
    issued = issue_key(admin)
    assert app.verify(issued.secret).allowed  # cached by the serving process
    CHANGES[change](admin, issued.key.id, "test-app")
    timer.now += 0.5
    assert app.verify(issued.secret).allowed  # within the documented staleness bound
    timer.now += 0.6
    assert not app.verify(issued.secret).allowed  # past sync_interval: refused


def test_scheme_change_elsewhere_recompiles_rules(two: tuple[KeySentry, KeySentry, Timer]) -> None:
    app, admin, timer = two
    admin.create_rate_limit_scheme("s1", "S", [{"unit": "minute", "max_requests": 5}])
    issued = issue_key(admin, rate_limit_scheme_slug="s1")
    app.verify(issued.secret)
    admin.update_rate_limit_scheme("s1", rules=[{"unit": "minute", "max_requests": 9}])
    timer.now += 1.1
    app.verify(issued.secret)
    from keysentry.core.keys import parse_key

    entry = app.cache.get(parse_key(issued.secret).digest)
    assert entry.limits[0].max_requests == 9  # type: ignore[union-attr]


def test_unrelated_changes_keep_the_cache(two: tuple[KeySentry, KeySentry, Timer]) -> None:
    app, admin, timer = two
    issued = issue_key(admin)
    app.verify(issued.secret)
    for _ in range(3):
        other = issue_key(admin)
        admin.revoke_api_key(other.key.id)
    finds = []
    real = app.store.find_keys
    app.store.find_keys = lambda p, s: finds.append(1) or real(p, s)  # type: ignore[method-assign]
    timer.now += 1.1
    assert app.verify(issued.secret).allowed
    assert finds == []  # the sync read the log; the key itself was not looked up again


class FailingReads:
    """A real store whose reads can be made to fail, as when the database goes away."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.down = False

    def read(self) -> object:
        if self.down:
            raise StoreError("database unreachable")
        return self.inner.read()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_cached_keys_keep_working_while_the_log_cannot_be_read() -> None:
    ks = KeySentry("memory://")
    timer = Timer()
    store = FailingReads(ks.store)
    ks.cache = CachedKeyStore(store, sync_interval=1.0, timer=timer)  # type: ignore[arg-type]
    issued = issue_key(ks)
    assert ks.verify(issued.secret).allowed
    store.down = True
    for _ in range(3):
        timer.now += 1.1
        assert ks.verify(issued.secret).allowed  # served from cache, sync retried later
    store.down = False
    timer.now += 1.1  # a failing store is left alone for a second (tests/stores/test_stale.py)
    ks.revoke_api_key(issued.key.id)  # same process: evicted at once anyway
    assert ks.verify(issued.secret).reason == "key_revoked"


def test_sync_can_be_turned_off(sql_url: str) -> None:
    app, admin = KeySentry(sql_url, sync_interval=None), KeySentry(sql_url)
    issued = issue_key(admin)
    assert app.verify(issued.secret).allowed
    admin.revoke_api_key(issued.key.id)
    assert app.verify(issued.secret).allowed  # stale until cache_ttl, as documented
    app.close()
    admin.close()
