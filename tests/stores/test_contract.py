"""One contract suite for the KeyStore port, run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from keysentry.core.keys import generate_key
from keysentry.errors import ConfigurationError, ConflictError
from keysentry.models import ApiAuthApp, KeyRecord, RateLimitRule, RateLimitScheme
from keysentry.stores import KeyStore, store_from_url

NOW = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[KeyStore]:
    s = store_from_url(database_url)
    yield s
    s.close()


def make_app(slug: str = "billing", app_id: str = "app_1", **fields: object) -> ApiAuthApp:
    return ApiAuthApp.model_validate(
        {
            "id": app_id,
            "app_slug": slug,
            "name": slug,
            "key_prefix": "sk_live",
            "permissions": ["users:*"],
            "created_at": NOW,
            "updated_at": NOW,
        }
        | fields
    )


def make_key(app: ApiAuthApp, key_id: str = "key_1", **fields: object) -> KeyRecord:
    parsed = generate_key(app.key_prefix)
    return KeyRecord.model_validate(
        {
            "id": key_id,
            "app_id": app.id,
            "app_slug": app.app_slug,
            "name": "k",
            "key_prefix": parsed.prefix,
            "key_suffix": parsed.suffix,
            "key_hash": parsed.digest,
            "metadata": {"team": "billing", "n": [1, None]},
            "created_at": NOW,
            "updated_at": NOW,
        }
        | fields
    )


def test_apps_round_trip_with_aware_utc_datetimes(store: KeyStore) -> None:
    app = make_app(deleted_at=None, organization_id="org_1")
    with store.write() as s:
        s.add_app(app)
    with store.read() as s:
        assert s.get_app("billing") == app
        assert s.get_app_by_id("app_1") == app
        assert s.list_apps() == [app]
        assert s.get_app("other") is None
    assert app.created_at.tzinfo is not None


def test_deleted_app_is_not_live_and_its_slug_can_be_reused(store: KeyStore) -> None:
    old = make_app()
    with store.write() as s:
        s.add_app(old)
        s.save_app(old.model_copy(update={"deleted_at": NOW}))
    new = make_app(app_id="app_2")
    with store.write() as s:
        assert s.get_app("billing") is None
        s.add_app(new)
    with store.read() as s:
        assert s.get_app("billing") == new
        assert s.get_app_by_id("app_1").deleted_at == NOW  # type: ignore[union-attr]
        assert [a.id for a in s.list_apps()] == ["app_2"]


def test_a_failed_write_session_writes_nothing(store: KeyStore) -> None:
    with pytest.raises(RuntimeError), store.write() as s:  # noqa: PT012 - the point is a block
        s.add_app(make_app())
        s.append_event("app.created", NOW, app_slug="billing")
        raise RuntimeError("validation failed after the first write")
    with store.read() as s:
        assert s.list_apps() == []
        assert s.events_after(0) == []


def test_keys_round_trip_and_hashes_stay_inside(store: KeyStore) -> None:
    app = make_app()
    record = make_key(app, expires_at=NOW + timedelta(days=1))
    with store.write() as s:
        s.add_app(app)
        s.add_key(record)
    with store.read() as s:
        loaded = s.get_key("key_1")
        assert loaded == record
        assert loaded is not None
        assert loaded.key_hash == record.key_hash
        assert s.list_keys("app_1") == [record]
        assert s.list_keys("app_2") == []


def test_keys_are_listed_by_owner(store: KeyStore) -> None:
    app, other_app = make_app(), make_app("shop", "app_2")
    later = NOW + timedelta(seconds=1)
    records = [make_key(app, "key_1", owner_user_id="alice", created_at=later),
               make_key(app, "key_2", owner_user_id="bob"),
               make_key(app, "key_3", owner_user_id="alice"),
               make_key(app, "key_4"),
               make_key(other_app, "key_5", owner_user_id="alice")]  # fmt: skip
    with store.write() as s:
        s.add_app(app)
        s.add_app(other_app)
        for record in records:
            s.add_key(record)
    with store.read() as s:
        assert [k.id for k in s.list_keys("app_1", "alice")] == ["key_3", "key_1"]  # oldest first
        assert [k.id for k in s.list_keys("app_1", "bob")] == ["key_2"]
        assert s.list_keys("app_1", "ALICE") == []  # ids compare exactly
        assert s.list_keys("app_2", "bob") == []
        assert len(s.list_keys("app_1")) == 4


def test_find_keys_by_prefix_and_suffix_including_grace_period(store: KeyStore) -> None:
    app = make_app()
    first = make_key(app, "key_1")
    other = make_key(app, "key_2")
    with store.write() as s:
        s.add_app(app)
        s.add_key(first)
        s.add_key(other)
    assert [k.id for k in store.find_keys("sk_live", first.key_suffix)] == ["key_1"]
    assert store.find_keys("sk_test", first.key_suffix) == []
    rotated_to = generate_key("sk_live")
    rotated = first.model_validate(
        first.dump_all()
        | {
            "key_hash": rotated_to.digest,
            "key_suffix": rotated_to.suffix,
            "previous_key_hash": first.key_hash,
            "previous_key_suffix": first.key_suffix,
            "previous_expires_at": NOW + timedelta(minutes=5),
        }
    )
    with store.write() as s:
        s.save_key(rotated)
    for suffix in (first.key_suffix, rotated_to.suffix):
        found = store.find_keys("sk_live", suffix)
        assert [k.id for k in found] == ["key_1"]
        assert found[0].previous_key_hash == first.key_hash


@pytest.fixture
def sql_store(sql_url: str) -> Iterator[KeyStore]:
    s = store_from_url(sql_url)
    yield s
    s.close()


def test_sql_constraint_violation_is_a_conflict_not_a_crash(sql_store: KeyStore) -> None:
    # Backstop under the service's own checks: the database refuses a second key with the
    # same hash, and the store reports it as ConflictError rather than a driver exception.
    store = sql_store
    app = make_app()
    record = make_key(app)
    with store.write() as s:
        s.add_app(app)
        s.add_key(record)
    with pytest.raises(ConflictError), store.write() as s:
        s.add_key(record.model_validate(record.dump_all() | {"id": "key_2"}))


def test_schemes_and_their_users(store: KeyStore) -> None:
    rule = RateLimitRule(unit="minute", max_requests=5, endpoints=["GET /x/*"])
    scheme = RateLimitScheme(slug="std", name="Std", rules=[rule], created_at=NOW, updated_at=NOW)
    app = make_app(rate_limit_scheme_slug="std")
    with store.write() as s:
        s.add_scheme(scheme)
        s.add_app(app)
        s.add_key(make_key(app, "key_9", rate_limit_scheme_slug="std"))
    with store.read() as s:
        assert s.get_scheme("std") == scheme
        assert s.list_schemes() == [scheme]
        assert s.scheme_users("std") == ["app 'billing'", "key 'key_9'"]
        assert s.scheme_users("other") == []
    changed = scheme.model_copy(update={"name": "Standard"})
    with store.write() as s:
        s.save_scheme(changed)
        s.save_app(app.model_copy(update={"deleted_at": NOW}))
    with store.read() as s:
        assert s.get_scheme("std") == changed
        assert s.scheme_users("std") == []  # the app is gone, so are its keys
    with store.write() as s:
        s.remove_scheme("std")
    with store.read() as s:
        assert s.get_scheme("std") is None


def test_events_are_numbered_in_order(store: KeyStore) -> None:
    with store.write() as s:
        first = s.append_event("app.created", NOW, app_slug="billing")
        second = s.append_event("key.revoked", NOW, app_slug="billing", key_id="key_1")
    with store.write() as s:
        third = s.append_event("scheme.updated", NOW, scheme_slug="std")
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    with store.read() as s:
        assert s.events_after(0) == [first, second, third]
        assert s.events_after(1, limit=1) == [second]
        assert s.events_after(3) == []


def test_unknown_url_scheme_is_a_configuration_error() -> None:
    for url in ("oracle://x", "", "redis://localhost", "mssql://x"):
        with pytest.raises(ConfigurationError):
            store_from_url(url)
