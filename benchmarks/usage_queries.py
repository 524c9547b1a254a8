"""Usage queries on a big table: one key's last 24 hours by minute and one app's last 30 days
by day, with *rows* minute buckets stored (default 10⁶: 100 keys x 10,000 minutes).

``python -m benchmarks.usage_queries [--rows N] [--postgres URL]`` prints the median time of
each query over 20 runs, on SQLite (a temporary file) and, with ``--postgres``, PostgreSQL,
and the bytes a stored bucket takes with its indexes (the table's size over its rows).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta

import sqlalchemy as sa

from keysentry import KeySentry
from keysentry.stores._sql_engines import engine_for
from keysentry.stores._sql_usage import USAGE

KEYS = 100


def fill(ks: KeySentry, rows: int, now: float) -> list[str]:
    """*rows* minute buckets over the app's keys, and their day buckets; the key ids."""
    ks.create_api_auth_app("big", "Big", "sk_big")
    keys = [ks.create_api_key("big", f"k{i}").key.id for i in range(KEYS)]
    minutes = rows // KEYS
    last = int(now // 60) * 60
    for start in range(0, minutes, 1000):
        batch = {
            ("big", key, "ok", 60, last - 60 * m): 1 + m % 7
            for key in keys
            for m in range(start, min(start + 1000, minutes))
        }
        ks.store.add_usage(batch)
    ks.store.add_usage({("big", key, "ok", 86400, last - last % 86400 - 86400 * d): 100
                        for key in keys for d in range(30)})  # fmt: skip
    return keys


def timed(call: object, runs: int = 20) -> float:
    """Median seconds of *call*."""
    assert callable(call)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bytes_per_row(url: str) -> float:
    """The usage table's size with its indexes (SQLite: the whole file, whose other tables
    hold only the app and its keys) over its rows."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(USAGE)).scalar_one()
            if engine.dialect.name == "postgresql":
                query = sa.text("SELECT pg_total_relation_size('keysentry_usage')")
                return float(conn.execute(query).scalar_one()) / rows
        return os.path.getsize(url.removeprefix("sqlite:///")) / rows
    finally:
        engine.dispose()


def run(url: str, rows: int) -> None:
    now = time.time()
    with KeySentry(url, usage_interval=None) as ks:
        started = time.perf_counter()
        keys = fill(ks, rows, now)
        print(f"{url.split(':')[0]}: {rows:,} minute buckets stored in "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        day = timed(lambda: ks.get_usage(key_id=keys[0], since=timedelta(hours=24),
                                         granularity="minute"))  # fmt: skip
        month = timed(lambda: ks.get_usage("big", since=timedelta(days=30), granularity="day"))
        points = len(ks.get_usage(key_id=keys[0], since=timedelta(hours=24), granularity="minute"))
        print(f"  one key, last 24 h by minute ({points} points): {day * 1000:.1f} ms")
        print(f"  one app, last 30 days by day: {month * 1000:.1f} ms")
        print(f"  {bytes_per_row(url):.0f} bytes per stored bucket, indexes included")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.usage_queries",
                                     description=__doc__)  # fmt: skip
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", metavar="URL", help="also on this (empty) database")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{tmp}/usage.db", args.rows)
    if args.postgres:
        run(args.postgres, args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
