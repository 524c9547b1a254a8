"""Usage analytics: what the queries return, how long buckets are kept, and the bucket rules.

Every verification is counted in memory by app, key and outcome (the reason code) per minute,
and written behind with ``last_used_at`` (:mod:`keysentry.stores.usage`). Each write adds the
minute's counts to three buckets at once, a minute, an hour and a day, so a rollup is never a
separate job and an hour is exactly the sum of its minutes. :class:`Retention` says how long
each is kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = [
    "GRANULARITIES",
    "MAX_BUCKETS",
    "Granularity",
    "GroupBy",
    "KeyUsage",
    "Retention",
    "TopBy",
    "UsagePoint",
    "UsageQuery",
    "parse_duration",
    "rollup",
    "utc",
]

Granularity = Literal["minute", "hour", "day"]
GroupBy = Literal["outcome", "key"]
TopBy = Literal["requests", "refused"]
#: Bucket lengths in seconds; buckets start at multiples of them (UTC).
GRANULARITIES: Final[Mapping[str, int]] = {"minute": 60, "hour": 3600, "day": 86400}
#: The most buckets one query spans: eight days of minutes, so "the last week by minute"
#: fits with room (a range asking for more is refused: no query reads more than this many
#: buckets per group).
MAX_BUCKETS: Final = 8 * 24 * 60

#: (app slug, key id or "", outcome, minute number) -> requests: what a process counts.
MinuteCounts = Mapping[tuple[str, str, str, int], int]
#: (app slug, key id or "", outcome, granularity seconds, bucket start) -> requests.
BucketCounts = dict[tuple[str, str, str, int, int], int]


class UsagePoint(BaseModel):
    """One bucket of one group: *count* verifications starting at *start*.

    Attributes:
        start: the bucket's start (UTC).
        count: verifications counted in it.
        outcome: the reason code (``ok``, ``rate_limited``, …) when grouped by outcome.
        key_id: the key when grouped by key (``None``: requests whose secret matched no
            key), or the key the query was about.
    """

    model_config = ConfigDict(frozen=True)

    start: datetime
    count: int
    outcome: str | None = None
    key_id: str | None = None


class KeyUsage(BaseModel):
    """One key's totals over a range (:meth:`~keysentry.KeySentry.get_top_keys`).

    Attributes:
        key_id: the key.
        requests: every verification of it.
        refused: those answered with anything but ``ok``.
    """

    model_config = ConfigDict(frozen=True)

    key_id: str
    requests: int
    refused: int


class Retention(BaseModel):
    """How long usage buckets and events are kept; ``None`` keeps them until deleted.

    Pruning runs by itself in each process's usage writer (at start, then hourly).

    Attributes:
        minute: minute buckets (default 7 days; at least 1 hour).
        hour: hour buckets (default 90 days; at least as long as *minute*).
        day: day buckets (default: kept).
        events: the event log (default: kept). The newest event is never pruned.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    minute: timedelta = timedelta(days=7)
    hour: timedelta = timedelta(days=90)
    day: timedelta | None = None
    events: timedelta | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Retention:
        if self.minute < timedelta(hours=1):
            raise ValueError("minute: must be at least 1 hour")
        if self.hour < self.minute:
            raise ValueError("hour: must be at least as long as minute")
        if self.day is not None and self.day < self.hour:
            raise ValueError("day: must be at least as long as hour")
        if self.events is not None and self.events < timedelta(hours=1):
            raise ValueError("events: must be at least 1 hour")
        return self

    def kept(self, granularity: int) -> timedelta | None:
        """How long buckets of *granularity* seconds are kept."""
        return {60: self.minute, 3600: self.hour}.get(granularity, self.day)

    def cutoffs(self, now: float) -> dict[int, int]:
        """Per granularity with a limit, the bucket start before which buckets go."""
        kept = {60: self.minute, 3600: self.hour, 86400: self.day}
        return {g: int(now - k.total_seconds()) for g, k in kept.items() if k is not None}


def rollup(counts: MinuteCounts) -> BucketCounts:
    """The minute, hour and day buckets a batch of minute counts adds to."""
    buckets: BucketCounts = {}
    for (app, key, outcome, minute), n in counts.items():
        start = minute * 60
        for granularity in (60, 3600, 86400):
            bucket = (app, key, str(outcome), granularity, start - start % granularity)
            buckets[bucket] = buckets.get(bucket, 0) + n
    return buckets


_DURATION = re.compile(r"(\d{1,6})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta | None:
    """``90s``, ``15m``, ``24h``, ``30d`` or ``2w`` as a timedelta; ``None`` if it is not one
    (what the CLI and the admin API's ``since`` and ``unused_for`` accept)."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        return None
    return timedelta(seconds=int(found.group(1)) * _UNIT_SECONDS[found.group(2)])


def utc(seconds: int) -> datetime:
    """A bucket start as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


class UsageQuery(NamedTuple):
    """What a store is asked for (built and checked by ``ks.get_usage``).

    Attributes:
        app_slug: the app's buckets.
        key_id: only this key's (``None``: every key's, and those of no key).
        granularity: bucket length in seconds.
        start: the first bucket start (inclusive).
        end: the bucket start where the range ends (exclusive).
        group_by: ``"outcome"`` or ``"key"``.
        after: a page's end: ``(bucket start, group)`` of its last point.
        limit: the most points (``None``: all in the range).
    """

    app_slug: str
    key_id: str | None
    granularity: int
    start: int
    end: int
    group_by: str
    after: tuple[int, str] | None = None
    limit: int | None = None
