"""The CLI's formats: integers it reads, and the human-readable output (tables for lists,
``field: value`` lines for records)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from keysentry.models import ApiAuthApp, ApiKey, Event, IssuedKey, RateLimitRule, RateLimitScheme

__all__ = ["integer", "render"]


def integer(text: str) -> int:
    """An integer in ASCII digits (argparse type): ``int()`` also reads "٣" and "²"."""
    value = text.strip()
    digits = value[1:] if value[:1] == "-" else value
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    return int(value)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _items(values: Sequence[str]) -> str:
    return ",".join(values) if values else "-"


def key_status(key: ApiKey, now: datetime | None = None) -> str:
    """``revoked``, ``disabled``, ``expired`` or ``active``."""
    now = now or datetime.now(UTC)
    if key.revoked_at is not None:
        return "revoked"
    if not key.is_active:
        return "disabled"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


Column = tuple[str, Callable[[Any], str]]

_COLUMNS: dict[type[BaseModel], list[Column]] = {
    ApiAuthApp: [
        ("APP_SLUG", lambda a: a.app_slug),
        ("NAME", lambda a: a.name),
        ("PREFIX", lambda a: a.key_prefix),
        ("ACTIVE", lambda a: "yes" if a.is_active else "no"),
        ("PERMISSIONS", lambda a: _items(a.permissions)),
        ("RESOURCES", lambda a: _items(a.resources)),
        ("SCHEME", lambda a: a.rate_limit_scheme_slug or "-"),
    ],
    RateLimitScheme: [
        ("SLUG", lambda s: s.slug),
        ("NAME", lambda s: s.name),
        ("RULES", lambda s: " ".join(r.short for r in s.rules)),
    ],
    ApiKey: [
        ("ID", lambda k: k.id),
        ("NAME", lambda k: k.name),
        ("KEY", lambda k: k.display),
        ("STATUS", key_status),
        ("PERMISSIONS", lambda k: _items(k.permissions) if k.permissions else "(app's)"),
        ("EXPIRES", lambda k: _when(k.expires_at)),
        ("LAST_USED", lambda k: _when(k.last_used_at)),
    ],
    Event: [
        ("SEQ", lambda e: str(e.seq)),
        ("AT", lambda e: _when(e.at)),
        ("KIND", lambda e: e.kind),
        ("APP", lambda e: e.app_slug or "-"),
        ("KEY", lambda e: e.key_id or "-"),
        ("SCHEME", lambda e: e.scheme_slug or "-"),
    ],
}


def _table(rows: Sequence[BaseModel]) -> str:
    columns = _COLUMNS[type(rows[0])]
    cells = [[title for title, _ in columns]]
    cells += [[get(row) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def _rule_text(rule: Any) -> str:
    # a rule of an app, key or scheme; or one rule's state in a `keysentry verify` verdict
    if isinstance(rule, RateLimitRule):
        return rule.short
    return f"{rule.policy}:{rule.remaining}/{rule.limit},reset={rule.reset}s"


def _record(model: BaseModel) -> str:
    data = model.model_dump()
    if isinstance(model, ApiKey):
        data = {"key": model.display, "status": key_status(model)} | data
    lines = []
    for name, value in data.items():
        if name == "rate_limits" or (isinstance(model, RateLimitScheme) and name == "rules"):
            rules = getattr(model, name)
            shown = " ".join(_rule_text(r) for r in rules) if rules else "-"
        elif isinstance(value, datetime):
            shown = _when(value)
        elif isinstance(value, list):
            shown = _items(value)
        elif isinstance(value, dict):
            shown = str(value) if value else "-"
        else:
            shown = "-" if value is None else str(value)
        lines.append(f"{name + ':':<28}{shown}")
    return "\n".join(lines)


def render(result: Any) -> str:
    """Format a management call's result for a terminal."""
    if isinstance(result, list):
        return _table(result) if result else "(none)"
    if isinstance(result, IssuedKey):
        return f"{_record(result.key)}\n{'secret:':<28}{result.secret}"
    if isinstance(result, BaseModel):
        return _record(result)
    own = getattr(result, "render", None)  # the usage reports draw their own tables
    return own() if callable(own) else str(result)
