"""Usage queries: verifications over time by outcome or key, the top keys (the counting is
:mod:`keysentry.stores.usage`; the buckets and retention :mod:`keysentry.usage`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from keysentry.errors import ValidationError
from keysentry.management._common import ManagementBase, require_id
from keysentry.usage import (
    GRANULARITIES,
    MAX_BUCKETS,
    KeyUsage,
    UsagePoint,
    UsageQuery,
    utc,
)

__all__ = ["UsageQueries"]

_DAY = 86400


class UsageQueries(ManagementBase):
    """``get_usage`` and ``get_top_keys``."""

    def get_usage(
        self,
        app_slug: str | None = None,
        key_id: str | None = None,
        since: datetime | timedelta | None = None,
        until: datetime | None = None,
        granularity: str = "hour",
        group_by: str = "outcome",
    ) -> list[UsagePoint]:
        """Verifications per bucket of one app (or one key), by outcome or by key.

        Args:
            app_slug: the app; may be left out when *key_id* is given.
            key_id: only this key's verifications.
            since: the range's start, or how far back from *until* (default: 24 hours).
            until: the range's end (default: now).
            granularity: ``"minute"``, ``"hour"`` or ``"day"`` buckets.
            group_by: ``"outcome"`` (the reason codes) or ``"key"``.

        Returns:
            Points ordered by start, then group; buckets with no verifications are left
            out. This process's pending counts are written first; other processes' arrive
            within their ``usage_interval``.

        Raises:
            NotFoundError: no such app or key.
            ValidationError: a bad field, ``since`` not before ``until``, more than
                :data:`~keysentry.usage.MAX_BUCKETS` buckets, or a range older than the
                granularity's retention.
        """
        query = self.usage_query(app_slug, key_id, since, until, granularity, group_by)
        return self.usage_points(query)

    def usage_query(
        self,
        app_slug: str | None,
        key_id: str | None,
        since: datetime | timedelta | None,
        until: datetime | None,
        granularity: str,
        group_by: str,
    ) -> UsageQuery:
        """The checked store query :meth:`get_usage` runs (the admin API pages it)."""
        if granularity not in GRANULARITIES:
            raise ValidationError.single("granularity", "must be 'minute', 'hour' or 'day'")
        if group_by not in ("outcome", "key"):
            raise ValidationError.single("group_by", "must be 'outcome' or 'key'")
        seconds = GRANULARITIES[granularity]
        app_slug = self._usage_app(app_slug, key_id)
        start, end = self._range(since, until, seconds, granularity)
        return UsageQuery(app_slug, key_id, seconds, start, end, group_by)

    def usage_points(self, query: UsageQuery) -> list[UsagePoint]:
        """Run a checked :meth:`usage_query` (after writing this process's pending counts)."""
        self.usage.flush()
        by_key = query.group_by == "key"
        return [
            UsagePoint(
                start=utc(start),
                count=n,
                outcome=None if by_key else group,
                key_id=(group or None) if by_key else query.key_id,
            )
            for start, group, n in self.store.read_usage(query)
        ]

    def get_top_keys(
        self,
        app_slug: str,
        since: datetime | timedelta | None = None,
        until: datetime | None = None,
        by: str = "requests",
        limit: int = 10,
    ) -> list[KeyUsage]:
        """The app's keys with the most verifications (``by="requests"``) or the most
        refusals (``by="refused"``) over the range (default: the last 24 hours), read from
        the finest buckets still kept for it.

        Raises:
            NotFoundError: no such app.
            ValidationError: a bad field.
        """
        if by not in ("requests", "refused"):
            raise ValidationError.single("by", "must be 'requests' or 'refused'")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise ValidationError.single("limit", "must be an integer from 1 to 1000")
        app_slug = self._usage_app(app_slug, None)
        now = self._clock()
        retention = self.usage.retention
        for granularity, seconds in GRANULARITIES.items():
            start, end = self._range(since, until, seconds, granularity, strict=False)
            kept = retention.kept(seconds)
            fits = (end - start) // seconds <= MAX_BUCKETS
            if fits and (kept is None or start >= now - kept.total_seconds() - seconds):
                break
        self.usage.flush()
        rows = self.store.top_keys(app_slug, seconds, start, end, by, limit)
        return [KeyUsage(key_id=k, requests=t, refused=r) for k, t, r in rows]

    def _usage_app(self, app_slug: str | None, key_id: str | None) -> str:
        with self.store.read() as session:
            if key_id is not None:
                record = self._key(session, key_id)
                if app_slug is not None and require_id(app_slug, "app_slug") != record.app_slug:
                    raise ValidationError.single(
                        "key_id", f"belongs to app {record.app_slug!r}, not {app_slug!r}"
                    )
                return record.app_slug
            if app_slug is None:
                raise ValidationError.single("app_slug", "is required unless key_id is given")
            return self._live_app(session, app_slug).app_slug

    def _range(
        self,
        since: datetime | timedelta | None,
        until: datetime | None,
        seconds: int,
        granularity: str,
        *,
        strict: bool = True,
    ) -> tuple[int, int]:
        """Bucket-aligned ``(start, end)``, end exclusive, checked against the retention
        and the bucket cap (*strict*; else only for shape)."""
        now = self._clock()
        end_at = now if until is None else _instant(until, "until")
        if since is None:
            since = timedelta(days=1)
        if isinstance(since, timedelta):
            if since <= timedelta(0):
                raise ValidationError.single("since", "must be a positive duration")
            start_at = end_at - since.total_seconds()
        else:
            start_at = _instant(since, "since")
        if start_at >= end_at:
            raise ValidationError.single("since", "must be before until")
        start = int(start_at // seconds) * seconds
        # up to now: the current bucket too; up to a given time: the buckets it reaches into
        end = (
            int(end_at // seconds) * seconds + seconds
            if until is None
            else -int(-end_at // seconds) * seconds
        )
        if not strict:
            return start, end
        buckets = (end - start) // seconds
        if buckets > MAX_BUCKETS:
            raise ValidationError.single(
                "since", f"asks for {buckets} {granularity} buckets, more than the "
                f"{MAX_BUCKETS} one query may read: narrow the range or use coarser buckets",
            )  # fmt: skip
        kept = self.usage.retention.kept(seconds)
        if kept is not None and start < now - kept.total_seconds() - seconds:
            raise ValidationError.single(
                "since", f"{granularity} buckets are kept for {_days(kept)}; ask for "
                "coarser buckets for older usage",
            )  # fmt: skip
        return start, end


def _instant(value: Any, field: str) -> float:
    if not isinstance(value, datetime):
        raise ValidationError.single(field, "must be a datetime")
    if value.tzinfo is None:
        raise ValidationError.single(field, "must include a timezone, e.g. 2026-12-31T23:59:59Z")
    return value.timestamp()


def _days(kept: timedelta) -> str:
    if kept % timedelta(days=1) == timedelta(0):
        return f"{kept.days} days"
    return f"{kept.total_seconds() / 3600:g} hours"
