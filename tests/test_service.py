"""The management API of docs/design.md §2, used as written there, on every store."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keysentry import (
    ConfigurationError,
    ConflictError,
    KeySentry,
    NotFoundError,
    RateLimitRule,
    ValidationError,
)
from keysentry.core.keys import hash_key, parse_key
from keysentry.testing import FakeClock, issue_key


def setup_internal_api(ks: KeySentry) -> None:
    ks.create_rate_limit_scheme(
        slug="standard",
        name="Standard",
        rules=[RateLimitRule(unit="minute", duration=1, max_requests=100, mode="per_key")],
    )
    ks.create_api_auth_app(
        app_slug="internal-api",
        name="Internal API",
        key_prefix="sk_live",
        permissions=["users:read", "users:write"],
        resources=["users/*"],
        rate_limit_scheme_slug="standard",
    )


def event_count(ks: KeySentry) -> int:
    return len(ks.list_events(limit=10_000))


def test_design_section_2_walkthrough(ks: KeySentry) -> None:
    setup_internal_api(ks)
    app = ks.get_api_auth_app("internal-api")
    assert app.rate_limits == [RateLimitRule(unit="minute", max_requests=100)]
    assert [a.app_slug for a in ks.list_api_auth_apps()] == ["internal-api"]

    issued = ks.create_api_key(
        "internal-api",
        name="Primary",
        permissions=["users:read"],
        metadata={"owner": "billing"},
        expires_at=None,
    )
    assert issued.secret.startswith("sk_live_")
    key = issued.key
    assert (key.app_slug, key.name, key.key_prefix) == ("internal-api", "Primary", "sk_live")
    assert key.key_suffix == issued.secret[-4:]
    assert key.permissions == ["users:read"]
    assert key.metadata == {"owner": "billing"}
    assert key.rate_limits == app.rate_limits
    assert ks.get_api_key(key.id) == key
    assert ks.list_api_keys("internal-api") == [key]

    revoked = ks.revoke_api_key(key.id, reason="leaked")
    assert revoked.revoked_at is not None
    assert revoked.revoked_reason == "leaked"
    assert [e.kind for e in ks.list_events()] == [
        "scheme.created",
        "app.created",
        "key.created",
        "key.revoked",
    ]


def test_secret_is_returned_once_and_never_stored(ks: KeySentry) -> None:
    issued = issue_key(ks)
    candidates = ks.store.find_keys("sk_test", issued.key.key_suffix)
    assert [c.key_hash for c in candidates] == [hash_key(issued.secret)]
    for text in (
        repr(issued),
        repr(issued.key),
        str(issued.key.model_dump()),
        repr(ks.get_api_key(issued.key.id)),
        repr(candidates[0]),
        str(candidates[0].model_dump()),
    ):
        assert issued.secret not in text
        assert hash_key(issued.secret) not in text
    assert "secret" in issued.model_dump()  # the one place it is shown


def test_duplicate_app_slug_is_a_conflict(ks: KeySentry) -> None:
    setup_internal_api(ks)
    before = event_count(ks)
    with pytest.raises(ConflictError) as info:
        ks.create_api_auth_app(app_slug="internal-api", name="Again", key_prefix="sk_x")
    assert info.value.field == "app_slug"
    assert event_count(ks) == before


def test_invalid_app_input_names_fields_and_writes_nothing(ks: KeySentry) -> None:
    with pytest.raises(ValidationError) as info:
        ks.create_api_auth_app(
            app_slug="Bad Slug", name="", key_prefix="sk-live", permissions=["ok", "not ok"]
        )
    assert info.value.fields == ["app_slug", "name", "key_prefix", "permissions"]
    with pytest.raises(ValidationError) as info:
        ks.create_api_auth_app(
            app_slug="ok-app", name="Ok", key_prefix="sk", rate_limit_scheme_slug="missing"
        )
    assert info.value.fields == ["rate_limit_scheme_slug"]
    assert ks.list_api_auth_apps() == []
    assert ks.list_events() == []


def test_user_id_excludes_permissions_and_resources_on_create_and_update(
    ks: KeySentry,
) -> None:
    with pytest.raises(ValidationError) as info:
        ks.create_api_auth_app(
            app_slug="user-export",
            name="User Export",
            key_prefix="wacht_export",
            user_id="usr_1",
            permissions=["users:read"],
            resources=["users/*"],
        )
    assert info.value.fields == ["permissions", "resources"]
    app = ks.create_api_auth_app(
        app_slug="user-export", name="User Export", key_prefix="wacht_export", user_id=123
    )
    assert app.user_id == "123"
    with pytest.raises(ValidationError) as info:
        ks.update_api_auth_app("user-export", permissions=["users:read"])
    assert info.value.fields == ["permissions"]
    other = ks.create_api_auth_app(
        app_slug="svc", name="Svc", key_prefix="sk_svc", permissions=["a"]
    )
    with pytest.raises(ValidationError):
        ks.update_api_auth_app(other.app_slug, user_id="usr_2")
    # keys of a user-attached app are owned by that user unless told otherwise
    assert ks.create_api_key("user-export", "k").key.owner_user_id == "123"


def test_update_app_changes_only_given_fields(ks: KeySentry, clock: FakeClock) -> None:
    setup_internal_api(ks)
    before = ks.get_api_auth_app("internal-api")
    clock.advance(10)
    after = ks.update_api_auth_app(
        "internal-api", name="Renamed", rate_limit_scheme_slug=None, is_active=False
    )
    assert (after.name, after.rate_limit_scheme_slug, after.rate_limits) == ("Renamed", None, [])
    assert after.is_active is False
    assert after.permissions == before.permissions
    assert after.created_at == before.created_at
    assert after.updated_at == before.updated_at + timedelta(seconds=10)
    assert ks.get_api_auth_app("internal-api") == after


@pytest.mark.parametrize(
    ("fields", "bad", "message"),
    [
        pytest.param({"app_slug": "new"}, "app_slug", "cannot be changed", id="slug"),
        pytest.param({"id": "x"}, "id", "cannot be changed", id="id"),
        pytest.param({"colour": "red"}, "colour", "not a known field", id="unknown"),
        pytest.param({"key_prefix": "Bad"}, "key_prefix", "not valid", id="prefix"),
        pytest.param(
            {"rate_limit_scheme_slug": "nope"}, "rate_limit_scheme_slug", "no rate", id="scheme"
        ),
        pytest.param({}, "", "nothing to update", id="empty"),
    ],
)
def test_bad_app_update_is_refused_and_writes_nothing(
    ks: KeySentry, fields: dict[str, Any], bad: str, message: str
) -> None:
    setup_internal_api(ks)
    before, events = ks.get_api_auth_app("internal-api"), event_count(ks)
    with pytest.raises(ValidationError, match=message) as info:
        ks.update_api_auth_app("internal-api", **fields)
    assert info.value.fields == [bad]
    assert ks.get_api_auth_app("internal-api") == before
    assert event_count(ks) == events


def test_narrowing_app_permissions_is_refused_while_a_key_holds_them(ks: KeySentry) -> None:
    setup_internal_api(ks)
    writer = ks.create_api_key("internal-api", "w", permissions=["users:write"])
    with pytest.raises(ValidationError, match=writer.key.id):
        ks.update_api_auth_app("internal-api", permissions=["users:read"])
    ks.update_api_auth_app("internal-api", permissions=["users:*"])  # widening is fine
    ks.revoke_api_key(writer.key.id)
    assert ks.update_api_auth_app("internal-api", permissions=["users:read"]).permissions == [
        "users:read"
    ]


def test_delete_app_is_soft_and_the_slug_can_be_reused(ks: KeySentry) -> None:
    setup_internal_api(ks)
    old_key = ks.create_api_key("internal-api", "k").key
    deleted = ks.delete_api_auth_app("internal-api")
    assert deleted.deleted_at is not None
    with pytest.raises(NotFoundError):
        ks.get_api_auth_app("internal-api")
    with pytest.raises(NotFoundError):
        ks.delete_api_auth_app("internal-api")
    assert ks.get_api_key(old_key.id).id == old_key.id  # audit: the record survives
    with pytest.raises(ConflictError, match="deleted"):
        ks.rotate_api_key(old_key.id)
    ks.create_api_auth_app(app_slug="internal-api", name="New", key_prefix="sk_live")
    assert ks.list_api_keys("internal-api") == []  # the old keys stay with the old app


def test_scheme_lifecycle(ks: KeySentry) -> None:
    rules = [
        {"unit": "second", "max_requests": 10},
        RateLimitRule(unit="hour", max_requests=1000, mode="per_app", priority=5),
    ]
    scheme = ks.create_rate_limit_scheme("burst", "Burst", rules, description="d")
    assert [r.short for r in scheme.rules] == ["10/second:per_key", "1000/hour:per_app"]
    assert ks.get_rate_limit_scheme("burst") == scheme
    assert ks.list_rate_limit_schemes() == [scheme]
    with pytest.raises(ConflictError):
        ks.create_rate_limit_scheme("burst", "Again", rules)
    updated = ks.update_rate_limit_scheme("burst", rules=[{"unit": "day", "max_requests": 5}])
    assert [r.short for r in updated.rules] == ["5/day:per_key"]
    assert ks.delete_rate_limit_scheme("burst") == updated
    with pytest.raises(NotFoundError):
        ks.get_rate_limit_scheme("burst")


def test_scheme_in_use_cannot_be_deleted(ks: KeySentry) -> None:
    setup_internal_api(ks)
    ks.create_rate_limit_scheme("vip", "VIP", [{"unit": "minute", "max_requests": 1000}])
    key = ks.create_api_key("internal-api", "k", rate_limit_scheme_slug="vip").key
    assert key.rate_limits[0].max_requests == 1000  # the key's own scheme wins
    with pytest.raises(ConflictError, match=key.id):
        ks.delete_rate_limit_scheme("vip")
    with pytest.raises(ConflictError, match="internal-api"):
        ks.delete_rate_limit_scheme("standard")
    ks.revoke_api_key(key.id)
    ks.delete_rate_limit_scheme("vip")


@pytest.mark.parametrize(
    ("rules", "bad"),
    [
        pytest.param([], "rules", id="no-rules"),
        pytest.param(
            [{"unit": "second", "duration": 1801, "max_requests": 1}],
            "rules.0.duration",
            id="second-bound",
        ),
        pytest.param(
            [{"unit": "minute", "max_requests": 1}, {"unit": "minute", "max_requests": 0}],
            "rules.1.max_requests",
            id="second-rule",
        ),
        pytest.param(
            [{"unit": "month", "duration": 2, "max_requests": 1}], "rules.0.duration", id="month"
        ),
        pytest.param("100/minute", "rules", id="not-a-list"),
    ],
)
def test_invalid_rules_name_the_rule_and_field(ks: KeySentry, rules: Any, bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        ks.create_rate_limit_scheme("s1", "S", rules)
    assert info.value.fields == [bad]
    assert ks.list_rate_limit_schemes() == []


def test_key_permissions_must_be_granted_by_the_app(ks: KeySentry) -> None:
    ks.create_api_auth_app(
        app_slug="api", name="API", key_prefix="sk", permissions=["users:*", "orders:read"]
    )
    assert ks.create_api_key("api", "a", permissions=["users:read", "users:*"]).key.permissions
    inherit = ks.create_api_key("api", "inherit").key
    assert inherit.permissions == []  # inherits the app's at verification
    with pytest.raises(ValidationError) as info:
        ks.create_api_key("api", "b", permissions=["orders:write", "*", "users:read"])
    assert info.value.fields == ["permissions", "permissions"]
    assert "'orders:write' is not granted" in str(info.value)
    ks.create_api_auth_app(app_slug="bare", name="Bare", key_prefix="sk")
    with pytest.raises(ValidationError, match="grants none"):
        ks.create_api_key("bare", "c", permissions=["x"])
    assert len(ks.list_api_keys("api")) == 2


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        pytest.param({"name": ""}, "name", id="name"),
        pytest.param({"metadata": [1]}, "metadata", id="metadata-list"),
        pytest.param({"metadata": {"x": {1, 2}}}, "metadata.x", id="metadata-set"),
        pytest.param({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at", id="past"),
        pytest.param({"expires_at": datetime(2030, 1, 1)}, "expires_at", id="naive"),  # noqa: DTZ001
        pytest.param({"expires_at": "soon"}, "expires_at", id="garbage"),
        pytest.param({"rate_limit_scheme_slug": "missing"}, "rate_limit_scheme_slug", id="scheme"),
        pytest.param({"environment": "x" * 65}, "environment", id="environment"),
    ],
)
def test_bad_key_input_names_the_field_and_writes_nothing(
    ks: KeySentry, fields: dict[str, Any], bad: str
) -> None:
    setup_internal_api(ks)
    events = event_count(ks)
    fields = {"name": "k"} | fields
    with pytest.raises(ValidationError) as info:
        ks.create_api_key("internal-api", **fields)
    assert info.value.fields[0] == bad
    assert ks.list_api_keys("internal-api") == []
    assert event_count(ks) == events


def test_unknown_app_or_key_is_not_found(ks: KeySentry) -> None:
    with pytest.raises(NotFoundError) as info:
        ks.create_api_key("nope", "k")
    assert (info.value.kind, info.value.ident) == ("app", "nope")
    for call in (ks.get_api_key, ks.revoke_api_key, ks.rotate_api_key):
        with pytest.raises(NotFoundError):
            call("key_missing")
    with pytest.raises(ValidationError):
        ks.get_api_key(None)  # type: ignore[arg-type]


def test_expiry_is_kept_in_utc(ks: KeySentry, clock: FakeClock) -> None:
    setup_internal_api(ks)
    now = datetime.fromtimestamp(clock(), UTC)
    key = ks.create_api_key("internal-api", "t", expires_at="2031-06-01T12:00:00+02:00").key
    assert key.expires_at == datetime(2031, 6, 1, 10, tzinfo=UTC)
    soon = ks.create_api_key("internal-api", "s", expires_at=now + timedelta(seconds=1)).key
    assert ks.get_api_key(soon.id).expires_at == now + timedelta(seconds=1)


def test_revoke_is_idempotent(ks: KeySentry, clock: FakeClock) -> None:
    key = issue_key(ks).key
    first = ks.revoke_api_key(key.id, reason="leaked")
    clock.advance(60)
    again = ks.revoke_api_key(key.id, reason="other")
    assert again == first
    assert [e.kind for e in ks.list_events()].count("key.revoked") == 1
    other = issue_key(ks).key
    with pytest.raises(ValidationError) as info:
        ks.revoke_api_key(other.id, reason="r" * 501)
    assert info.value.fields == ["revoked_reason"]
    assert ks.get_api_key(other.id).revoked_at is None


def test_rotate_gives_a_new_secret_and_drops_the_old_one(ks: KeySentry) -> None:
    issued = issue_key(ks, permissions=["users:read"])
    rotated = ks.rotate_api_key(issued.key.id)
    assert rotated.key.id == issued.key.id
    assert rotated.secret != issued.secret
    assert rotated.key.permissions == ["users:read"]
    assert rotated.key.key_suffix == rotated.secret[-4:]
    old, new = parse_key(issued.secret), parse_key(rotated.secret)
    assert ks.store.find_keys(old.prefix, old.suffix) == []
    [record] = ks.store.find_keys(new.prefix, new.suffix)
    assert record.key_hash == new.digest
    assert record.previous_key_hash is None


def test_rotate_with_grace_keeps_the_old_secret_until_a_deadline(
    ks: KeySentry, clock: FakeClock
) -> None:
    issued = issue_key(ks)
    ks.rotate_api_key(issued.key.id, grace_seconds=300)
    old = parse_key(issued.secret)
    [record] = ks.store.find_keys(old.prefix, old.suffix)
    assert record.previous_key_hash == old.digest
    assert record.previous_expires_at == datetime.fromtimestamp(clock() + 300, UTC)
    for bad in (-1, 604_801, 1.5, True, "60"):
        with pytest.raises(ValidationError, match="grace_seconds"):
            ks.rotate_api_key(issued.key.id, grace_seconds=bad)  # type: ignore[arg-type]
    ks.revoke_api_key(issued.key.id)
    assert ks.store.find_keys(old.prefix, old.suffix) == []  # revoking ends the grace
    with pytest.raises(ConflictError, match="revoked"):
        ks.rotate_api_key(issued.key.id)


def test_keys_inherit_the_apps_organization_and_workspace(ks: KeySentry) -> None:
    ks.create_api_auth_app(
        app_slug="acme-v2",
        name="Acme",
        key_prefix="wk_live",
        permissions=["read:data"],
        organization_id="org_abc123",
        workspace_id="ws_1",
    )
    key = ks.create_api_key(
        "acme-v2", "Production Backend Key", owner_user_id="usr_abc123", workspace_id="ws_2"
    ).key
    assert (key.owner_user_id, key.organization_id, key.workspace_id) == (
        "usr_abc123",
        "org_abc123",
        "ws_2",
    )


def test_ids_are_unique_and_time_ordered(ks: KeySentry, clock: FakeClock) -> None:
    ids = []
    for _ in range(5):
        ids.append(issue_key(ks).key.id)
        clock.advance(0.002)
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    assert all(i.startswith("key_") for i in ids)


def test_constructor_rejects_bad_configuration(tmp_path: object) -> None:
    with pytest.raises(ConfigurationError):
        KeySentry("ftp://nowhere")
    with pytest.raises(ConfigurationError, match="limiter"):
        KeySentry("memory://", limiter_url="memcached://x")
    with pytest.raises(ConfigurationError, match="not both"):
        KeySentry("memory://", store=KeySentry("memory://").store)
    assert KeySentry("memory://", limiter_url="redis://localhost:6379/0").limiter_url


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("cache_ttl", "30", "cache_ttl must be a finite number of seconds >= 0"),
        ("cache_ttl", -1, "cache_ttl must be"),
        ("cache_ttl", float("nan"), "cache_ttl must be"),
        ("cache_ttl", float("inf"), "cache_ttl must be"),
        ("cache_ttl", True, "cache_ttl must be"),
        ("sync_interval", -1, "sync_interval must be a finite number of seconds >= 0, or None"),
        ("sync_interval", "1", "sync_interval must be"),
        ("max_stale", float("nan"), "max_stale must be a finite number of seconds >= 0"),
        ("usage_interval", float("nan"), "usage_interval must be"),
        ("limiter_timeout", 0, "limiter_timeout must be"),
        ("limiter_timeout", "0.1", "limiter_timeout must be"),
        ("cache_size", 0, "cache_size must be an integer >= 1"),
        ("cache_size", 2.5, "cache_size must be"),
        ("cache_size", "100", "cache_size must be"),
        ("analytics", "no", "analytics must be True or False"),  # truthy: it would mean yes
        ("metrics", 1, "metrics must be True or False"),
        ("metrics_per_key", "yes", "metrics_per_key must be True or False"),
        ("clock", 1_700_000_000.0, "clock must be callable"),
        ("token_factory", "abc", "token_factory must be callable"),
    ],
)
def test_constructor_names_a_setting_of_the_wrong_type_or_out_of_range(
    tmp_path: Any, option: str, value: object, message: str
) -> None:
    # refused before anything is opened: no database file, no thread
    database = tmp_path / "keys.db"
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        KeySentry(f"sqlite:///{database}", **{option: value})
    assert not database.exists()


@pytest.mark.parametrize("sync_interval", [0, None])
def test_constructor_takes_each_setting_at_its_bounds(sync_interval: float | None) -> None:
    # a TTL of 0 caches nothing; a sync interval of 0 reads the event log before each request
    with KeySentry("memory://", cache_ttl=0, sync_interval=sync_interval, max_stale=0,
                   usage_interval=None, limiter_timeout=5, cache_size=1, analytics=False,
                   metrics_per_key=False, clock=time.time) as ks:  # fmt: skip
        ks.create_api_auth_app("api", "API", "sk_test")
        issued = ks.create_api_key("api", "k")
        assert [ks.verify(issued.secret).allowed for _ in range(2)] == [True, True]
        ks.revoke_api_key(issued.key.id)
        assert not ks.verify(issued.secret).allowed


def test_default_store_is_a_sqlite_file_in_the_working_directory(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with KeySentry() as ks:
        issue_key(ks)
    assert (tmp_path / "keysentry.db").exists()
    with KeySentry() as ks:
        assert len(ks.list_api_keys("test-app")) == 1


def test_one_owners_keys_on_every_store(ks: KeySentry) -> None:
    setup_internal_api(ks)
    theirs = [ks.create_api_key("internal-api", f"k{i}", owner_user_id=42) for i in range(2)]
    ks.create_api_key("internal-api", "someone else's", owner_user_id="43")
    ks.create_api_key("internal-api", "nobody's")
    ks.revoke_api_key(theirs[0].key.id)  # revoked keys are listed too
    for owner in (42, "42"):  # an integer id is stored as its string
        listed = ks.list_api_keys("internal-api", owner_user_id=owner)
        assert {k.id for k in listed} == {k.key.id for k in theirs}  # one instant: any order
    assert ks.list_api_keys("internal-api", owner_user_id="nobody") == []
    odd = ks.create_api_key("internal-api", "odd owner", owner_user_id="tab\there é")
    listed = ks.list_api_keys("internal-api", owner_user_id="tab\there é")
    assert [k.id for k in listed] == [odd.key.id]  # any id a key can hold can be listed by
    stale = ks.list_api_keys("internal-api", owner_user_id=42, unused_for=timedelta(days=1))
    assert {k.id for k in stale} == {k.key.id for k in theirs}  # never used: both stale


@pytest.mark.parametrize("bad", ["", "x" * 129, "a\x00b", True, 4.2, ["42"]])
def test_a_bad_owner_filter_is_a_field_error(ks: KeySentry, bad: Any) -> None:
    setup_internal_api(ks)
    with pytest.raises(ValidationError) as caught:
        ks.list_api_keys("internal-api", owner_user_id=bad)
    assert [e.field for e in caught.value.errors] == ["owner_user_id"]
