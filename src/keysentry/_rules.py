"""Rate-limit rules and schemes: units, modes, Wacht's bounds, the short form
``100/minute:per_key@GET /users/*``. Imported through :mod:`keysentry.models`."""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import Field, StrictInt, ValidationInfo, field_validator

from keysentry._fields import MAX_LIST_LENGTH, Name, SchemeSlug, Text, UtcDatetime, _Model, build
from keysentry.core.patterns import parse_endpoint
from keysentry.errors import ValidationError

__all__ = ["MODES", "UNITS", "RateLimitMode", "RateLimitRule", "RateLimitScheme", "RateLimitUnit"]

RateLimitUnit = Literal[
    "millisecond", "second", "minute", "hour", "day", "calendar_day", "month", "calendar_month"
]
RateLimitMode = Literal[
    "per_app",
    "per_key",
    "per_app_and_endpoint",
    "per_key_and_endpoint",
    "per_app_and_ip",
    "per_key_and_ip",
    "per_owner",
    "per_organization",
    "per_workspace",
]
UNITS: tuple[str, ...] = get_args(RateLimitUnit)
MODES: tuple[str, ...] = get_args(RateLimitMode)

# Largest duration per unit, as Wacht enforces them; no window is longer than 30 days.
_MAX_DURATION = {
    "millisecond": 60_000,
    "second": 1_800,
    "minute": 1_440,
    "hour": 720,
    "day": 30,
    "calendar_day": 1,
    "month": 1,
    "calendar_month": 1,
}
_UNIT_MS = {
    "millisecond": 1,
    "second": 1_000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "calendar_day": 86_400_000,
    "month": 30 * 86_400_000,
    "calendar_month": 31 * 86_400_000,
}
_SHORT_RULE = re.compile(r"(\d{1,10})/(\d{0,6})([a-z_]+)(?::([a-z_]+))?(?:@(.+))?", re.ASCII)
_UNIT_ALIASES = {
    "ms": "millisecond",
    "s": "second",
    "sec": "second",
    "m": "minute",
    "min": "minute",
    "h": "hour",
    "d": "day",
}


class RateLimitRule(_Model):
    """One rate-limit rule: at most ``max_requests`` per ``duration`` x ``unit``.

    Bounds follow Wacht: ``millisecond`` <= 60000, ``second`` <= 1800, ``minute`` <= 1440,
    ``hour`` <= 720, ``day`` <= 30; ``calendar_day``, ``month`` and ``calendar_month`` take
    duration 1. ``endpoints`` are patterns such as ``"*"``, ``"/users/*"`` or
    ``"GET /users/*"``; the rule counts only requests they match. Rules of higher
    ``priority`` are checked first.
    """

    unit: RateLimitUnit
    duration: StrictInt = 1
    max_requests: StrictInt = Field(ge=1, le=1_000_000_000)
    mode: RateLimitMode = "per_key"
    endpoints: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=50)
    priority: StrictInt = Field(default=0, ge=-1_000_000, le=1_000_000)

    @field_validator("duration")
    @classmethod
    def _duration_in_bounds(cls, value: int, info: ValidationInfo) -> int:
        unit = info.data.get("unit")
        if value < 1:
            raise ValueError("must be at least 1")
        if unit is not None and value > _MAX_DURATION[unit]:
            if _MAX_DURATION[unit] == 1:
                raise ValueError(f"must be 1 for unit {unit!r}")
            raise ValueError(f"must be at most {_MAX_DURATION[unit]} for unit {unit!r}")
        return value

    @field_validator("endpoints")
    @classmethod
    def _endpoints_parse(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_endpoint(text)  # raises ValueError with a message for the user
        return list(dict.fromkeys(value))

    @classmethod
    def from_short(cls, text: str) -> RateLimitRule:
        """Parse the short form ``MAX/[DURATION]UNIT[:MODE][@ENDPOINT[,ENDPOINT…]]``.

        ``100/minute`` (per key), ``1000/hour:per_app``, ``10/5second:per_key@GET /x/*``.
        Units may be abbreviated: ``ms``, ``s``/``sec``, ``m``/``min``, ``h``, ``d``.

        Raises:
            ValidationError: the text is not in the short form, or the rule is invalid.
        """
        match = _SHORT_RULE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValidationError.single(
                "rule", f"{text!r} is not of the form 100/minute[:per_key][@GET /path]"
            )
        max_requests, duration, unit, mode, endpoints = match.groups()
        data: dict[str, Any] = {
            "max_requests": int(max_requests),
            "duration": int(duration) if duration else 1,
            "unit": _UNIT_ALIASES.get(unit, unit),
        }
        if mode:
            data["mode"] = mode
        if endpoints:
            data["endpoints"] = [e.strip() for e in endpoints.split(",")]
        return build(cls, data)

    @property
    def short(self) -> str:
        """The rule in the short form :meth:`from_short` reads (priority left out)."""
        duration = "" if self.duration == 1 else str(self.duration)
        text = f"{self.max_requests}/{duration}{self.unit}:{self.mode}"
        if self.endpoints != ["*"]:
            text += "@" + ",".join(self.endpoints)
        return text

    @property
    def window_ms(self) -> int:
        """The window length in milliseconds (calendar units: their longest length)."""
        return self.duration * _UNIT_MS[self.unit]


class RateLimitScheme(_Model):
    """A named, reusable list of rules (``rate_limit_scheme_slug`` on apps and keys)."""

    slug: SchemeSlug
    name: Name
    description: Text | None = None
    rules: list[RateLimitRule] = Field(min_length=1, max_length=MAX_LIST_LENGTH)
    created_at: UtcDatetime
    updated_at: UtcDatetime
