from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keysentry import RateLimitRule, ValidationError
from keysentry.models import ApiAuthApp, KeyRecord, build

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("unit", "duration", "ok"),
    [
        pytest.param("millisecond", 60_000, True, id="ms-max"),
        pytest.param("millisecond", 60_001, False, id="ms-over"),
        pytest.param("second", 1_800, True, id="second-max"),
        pytest.param("second", 1_801, False, id="second-over"),
        pytest.param("minute", 1_440, True, id="minute-max"),
        pytest.param("minute", 1_441, False, id="minute-over"),
        pytest.param("hour", 720, True, id="hour-max"),
        pytest.param("hour", 721, False, id="hour-over"),
        pytest.param("day", 30, True, id="day-max"),
        pytest.param("day", 31, False, id="day-over"),
        pytest.param("calendar_day", 1, True, id="calendar-day"),
        pytest.param("calendar_day", 2, False, id="calendar-day-2"),
        pytest.param("month", 2, False, id="month-2"),
        pytest.param("calendar_month", 1, True, id="calendar-month"),
        pytest.param("minute", 0, False, id="zero"),
        pytest.param("minute", -1, False, id="negative"),
    ],
)
def test_rule_duration_bounds_follow_wacht(unit: str, duration: int, ok: bool) -> None:
    data = {"unit": unit, "duration": duration, "max_requests": 10}
    if ok:
        assert build(RateLimitRule, data).window_ms <= 31 * 86_400_000
    else:
        with pytest.raises(ValidationError) as info:
            build(RateLimitRule, data)
        assert info.value.fields == ["duration"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("max_requests", 0, id="max-zero"),
        pytest.param("max_requests", True, id="max-bool"),
        pytest.param("max_requests", "10", id="max-string"),
        pytest.param("unit", "week", id="unit"),
        pytest.param("mode", "per_user", id="mode"),
        pytest.param("endpoints", [], id="endpoints-empty"),
        pytest.param("endpoints", ["get /x"], id="endpoints-method-case"),
        pytest.param("priority", 1.5, id="priority-float"),
        pytest.param("burst", 3, id="unknown-field"),
    ],
)
def test_rule_errors_name_the_field(field: str, value: object) -> None:
    data = {"unit": "minute", "max_requests": 10, field: value}
    with pytest.raises(ValidationError) as info:
        build(RateLimitRule, data)
    assert info.value.fields == [field]


def test_rule_defaults_and_short_form() -> None:
    rule = RateLimitRule(unit="minute", max_requests=100)
    assert (rule.duration, rule.mode, rule.endpoints, rule.priority) == (1, "per_key", ["*"], 0)
    assert rule.short == "100/minute:per_key"
    assert RateLimitRule.from_short("100/minute") == rule
    assert RateLimitRule.from_short("5/10s:per_app@GET /x/*").model_dump() == {
        "unit": "second",
        "duration": 10,
        "max_requests": 5,
        "mode": "per_app",
        "endpoints": ["GET /x/*"],
        "priority": 0,
    }
    with pytest.raises(ValidationError, match="is not of the form"):
        RateLimitRule.from_short("lots/minute")


def _app(**fields: object) -> dict[str, object]:
    return {
        "id": "app_1",
        "app_slug": "billing",
        "name": "Billing",
        "key_prefix": "sk_live",
        "created_at": NOW,
        "updated_at": NOW,
    } | fields


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        pytest.param({"app_slug": "Billing"}, "app_slug", id="slug-upper"),
        pytest.param({"app_slug": "b"}, "app_slug", id="slug-short"),
        pytest.param({"app_slug": "-billing"}, "app_slug", id="slug-dash-first"),
        pytest.param({"app_slug": "billing\n"}, "app_slug", id="slug-newline"),
        pytest.param({"key_prefix": "sk-live"}, "key_prefix", id="prefix-dash"),
        pytest.param({"key_prefix": "1sk"}, "key_prefix", id="prefix-digit"),
        pytest.param({"name": "   "}, "name", id="name-blank"),
        pytest.param({"permissions": ["a b"]}, "permissions", id="perm-space"),
        pytest.param({"permissions": "users:read"}, "permissions", id="perm-str"),
        pytest.param({"user_id": "u1", "permissions": ["x"]}, "permissions", id="user-perm"),
        pytest.param({"user_id": "u1", "resources": ["x/*"]}, "resources", id="user-res"),
        pytest.param({"created_at": datetime(2026, 1, 1)}, "created_at", id="naive-time"),  # noqa: DTZ001
        pytest.param({"secret": "x"}, "secret", id="unknown"),
    ],
)
def test_app_validation_names_the_field(fields: dict[str, object], bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        build(ApiAuthApp, _app(**fields))
    assert info.value.fields == [bad]


def test_user_id_accepts_numbers_as_wacht_does() -> None:
    app = build(ApiAuthApp, _app(user_id=42, organization_id=7))
    assert (app.user_id, app.organization_id) == ("42", "7")


def test_repeated_patterns_are_dropped_in_order() -> None:
    app = build(ApiAuthApp, _app(permissions=["b", "a", "b"]))
    assert app.permissions == ["b", "a"]


def test_key_record_hides_its_hashes() -> None:
    record = build(
        KeyRecord,
        {
            "id": "key_1",
            "app_id": "app_1",
            "app_slug": "billing",
            "name": "k",
            "key_prefix": "sk_live",
            "key_suffix": "abcd",
            "key_hash": "f" * 64,
            "previous_key_hash": "e" * 64,
            "created_at": NOW,
            "updated_at": NOW,
        },
    )
    for text in (
        repr(record),
        str(record.model_dump()),
        record.model_dump_json(),
        repr(record.public()),
    ):
        assert "f" * 64 not in text
        assert "e" * 64 not in text
        assert "app_1" not in text
    assert not hasattr(record.public(), "key_hash")
    assert record.dump_all()["key_hash"] == "f" * 64


def test_metadata_must_be_a_small_json_object() -> None:
    base = {
        "id": "key_1",
        "app_id": "a",
        "app_slug": "billing",
        "name": "k",
        "key_prefix": "sk_live",
        "key_suffix": "abcd",
        "key_hash": "f" * 64,
        "created_at": NOW,
        "updated_at": NOW,
    }
    for bad in ([1, 2], "text", {"x": object()}, {"big": "x" * 20_000}):
        with pytest.raises(ValidationError) as info:
            build(KeyRecord, base | {"metadata": bad})
        assert info.value.fields[0].startswith("metadata")
