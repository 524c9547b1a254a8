"""``keysentry usage APP`` and ``keysentry keys stale APP``: usage analytics in a terminal,
a row per outcome (or key, or top key) with its total and a sparkline over the range."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from keysentry.service import KeySentry
from keysentry.usage import GRANULARITIES, KeyUsage, UsagePoint, parse_duration

__all__ = ["TopReport", "UsageReport", "add_usage_parser", "duration", "sparkline", "stale_keys"]

_BARS = "▁▂▃▄▅▆▇█"
#: The widest sparkline: longer ranges sum neighbouring buckets into one column.
MAX_COLUMNS = 48


def duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``30d`` or ``2w`` as a timedelta (argparse type)."""
    value = parse_duration(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 15m, 24h or 30d")
    return value


def _instant(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time like 2026-12-31T23:59:59Z"
        ) from None


def sparkline(values: list[int]) -> str:
    """One character per value, its height relative to the largest; blank for 0."""
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    return "".join(" " if v <= 0 else _BARS[min(7, (v * 8 - 1) // top)] for v in values)


@dataclass
class UsageReport:
    """What ``keysentry usage`` prints: the points, grouped, with sparklines."""

    app_slug: str
    points: list[UsagePoint]
    start: int
    end: int
    granularity: str
    group_by: str

    def to_json(self) -> Any:
        """The points, for ``--json``."""
        return [p.model_dump(mode="json") for p in self.points]

    def render(self) -> str:
        """The table."""
        seconds = GRANULARITIES[self.granularity]
        buckets = max(1, (self.end - self.start) // seconds)
        per_column = -(-buckets // MAX_COLUMNS)
        columns = -(-buckets // per_column)
        series: dict[str, list[int]] = {}
        for point in self.points:
            name = (point.outcome if self.group_by == "outcome" else point.key_id) or "(no key)"
            column = (int(point.start.timestamp()) - self.start) // seconds // per_column
            series.setdefault(name, [0] * columns)[min(column, columns - 1)] += point.count
        total = sum(p.count for p in self.points)
        span = f"{_when(self.start)} to {_when(self.end)}"
        unit = f"{per_column} {self.granularity}s" if per_column > 1 else f"1 {self.granularity}"
        head = f"{self.app_slug}: {total:,} verifications, {span}, 1 column = {unit}"
        if not series:
            return head + "\n(no verifications in this range)"
        title = "OUTCOME" if self.group_by == "outcome" else "KEY"
        width = max(len(title), *(len(name) for name in series))
        lines = [head, f"{title:<{width}}  {'COUNT':>12}  {'SHARE':>6}  OVER TIME"]
        for name, values in sorted(series.items(), key=lambda kv: (-sum(kv[1]), kv[0])):
            count = sum(values)
            share = f"{100 * count / total:.1f}%"
            lines.append(f"{name:<{width}}  {count:>12,}  {share:>6}  {sparkline(values)}")
        return "\n".join(lines)


@dataclass
class TopReport:
    """What ``keysentry usage APP --top`` prints: a bar per key."""

    keys: list[KeyUsage]
    names: dict[str, str]
    by: str

    def to_json(self) -> Any:
        """The keys' totals, for ``--json``."""
        return [k.model_dump(mode="json") for k in self.keys]

    def render(self) -> str:
        """The table."""
        if not self.keys:
            return "(no verifications in this range)"
        top = max(getattr(k, self.by) for k in self.keys) or 1
        width = max(len("KEY"), *(len(k.key_id) for k in self.keys))
        lines = [
            f"{'KEY':<{width}}  {'NAME':<20}  {'REQUESTS':>10}  {'REFUSED':>9}  {self.by.upper()}"
        ]
        for k in self.keys:
            bar = "█" * max(1 if getattr(k, self.by) else 0, round(24 * getattr(k, self.by) / top))
            name = self.names.get(k.key_id, "")[:20]
            lines.append(
                f"{k.key_id:<{width}}  {name:<20}  {k.requests:>10,}  {k.refused:>9,}  {bar}"
            )
        return "\n".join(lines)


def _when(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%MZ")


def _usage(ks: KeySentry, a: argparse.Namespace) -> Any:
    if a.top:
        keys = ks.get_top_keys(a.app_slug, since=a.since, until=a.until, by=a.top, limit=a.limit)
        names = {k.id: k.name for k in ks.list_api_keys(a.app_slug)}
        return TopReport(keys, names, a.top)
    query = ks.usage_query(a.app_slug, a.key, a.since, a.until, a.granularity, a.by)
    points = ks.usage_points(query)
    return UsageReport(query.app_slug, points, query.start, query.end, a.granularity, a.by)


def add_usage_parser(groups: Any, common: argparse.ArgumentParser) -> None:
    """``keysentry usage APP …``"""
    p = groups.add_parser("usage", parents=[common], help="verifications over time")
    p.set_defaults(handler=_usage)
    p.add_argument("app_slug")
    p.add_argument("--key", metavar="KEY_ID", help="only this key's verifications")
    p.add_argument("--since", type=duration, default=timedelta(hours=24),
                   help="how far back: 15m, 24h, 30d, 2w (default 24h)")  # fmt: skip
    p.add_argument("--until", type=_instant, metavar="ISO8601", help="default: now")
    p.add_argument("--granularity", choices=tuple(GRANULARITIES), default="hour")
    p.add_argument("--by", choices=("outcome", "key"), default="outcome")
    p.add_argument("--top", choices=("requests", "refused"),
                   help="the keys with the most requests (or refusals) instead")  # fmt: skip
    p.add_argument("--limit", type=int, default=10, help="how many keys with --top")


def stale_keys(ks: KeySentry, a: argparse.Namespace) -> Any:
    """``keysentry keys stale APP --unused-for 30d``"""
    return ks.list_api_keys(a.app_slug, unused_for=a.unused_for)
