"""Pieces both page sets show: a key's status, a usage chart over a chosen range, field
errors by name, and lists typed into a text box."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from markupsafe import Markup

from keysentry._cli_format import key_status
from keysentry.charts import usage_svg
from keysentry.errors import ValidationError
from keysentry.service import KeySentry
from keysentry.web.pages import Form

__all__ = ["GRACES", "RANGES", "Usage", "field_errors", "grace_seconds", "key_status",
           "split_list", "usage_chart"]  # fmt: skip

#: The grace periods a rotation offers: seconds, label.
GRACES = [(0, "none: the old secret stops now"), (3600, "1 hour"), (86_400, "1 day"),
          (7 * 86_400, "7 days")]  # fmt: skip

#: The ranges a chart offers: name -> (length, granularity).
RANGES = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "hour"),
    "30d": (timedelta(days=30), "day"),
}


@dataclass(frozen=True)
class Usage:
    """A chart (``None`` with analytics off) and its caption."""

    svg: Markup | None
    caption: str
    total: int


def usage_chart(ks: KeySentry, app_slug: str | None, key_id: str | None, range_name: str) -> Usage:
    """Verifications by outcome over *range_name* (one of :data:`RANGES`, else 24 h)."""
    if not ks.usage.analytics:
        return Usage(None, "Usage analytics are off (KeySentry(analytics=False)): "
                     "only the last use is known.", 0)  # fmt: skip
    length, granularity = RANGES.get(range_name, RANGES["24h"])
    query = ks.usage_query(app_slug, key_id, length, None, granularity, "outcome")
    points = ks.usage_points(query)
    total = sum(p.count for p in points)
    title = f"Verifications per {granularity}, by outcome"
    drawn = usage_svg(points, query.start, query.end, granularity, title=title)
    caption = f"{title}: {total:,} in the last {range_name} (UTC)."
    return Usage(Markup(drawn), caption, total)  # noqa: S704  (usage_svg escapes its labels)


def field_errors(error: ValidationError) -> dict[str, str]:
    """The first message per top-level field (``rules.0.unit`` counts as ``rules``)."""
    found: dict[str, str] = {}
    for e in error.errors:
        found.setdefault(e.field.split(".")[0], e.message)
    return found


_SEPARATORS = re.compile(r"[\s,]+")


def split_list(text: str) -> list[str]:
    """``"a:read, b:write"`` or one per line -> ``["a:read", "b:write"]``."""
    return [item for item in _SEPARATORS.split(text) if item]


def grace_seconds(form: Form) -> int | None:
    """The rotation form's grace period, if it is one of :data:`GRACES`."""
    chosen = form.get("grace_seconds", "0")
    for seconds, _ in GRACES:
        if chosen == str(seconds):
            return seconds
    return None
