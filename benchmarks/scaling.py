"""Cold lookups as an app's keys grow: ``python -m benchmarks.scaling``.

One app holds 10², 10⁴ and 10⁵ keys in turn (filler rows inserted in bulk, with random
suffixes as real keys have), on SQLite, PostgreSQL and MySQL/MariaDB where they are
reachable; the time is a cold verification's store reads for one real key: its candidates
by (prefix, suffix), then the matching row. The target: 10⁵ keys ≤ 1.5 x the time with 10²,
on every store (each read is an index search, so the depth of a B-tree is all that grows).
"""

from __future__ import annotations

import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keysentry import KeySentry
from keysentry.core.keys import ALPHABET, parse_key
from keysentry.stores._sql_schema import KEYS

SIZES = (100, 10_000, 100_000)
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_URL = "mysql://root@127.0.0.1:3306/test"


def _filler(app_id: str, count: int, start: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "id": f"key_fill{start + i:012d}",
            "app_id": app_id,
            "app_slug": "bench",
            "name": "filler",
            "key_prefix": "sk_bench",
            "key_suffix": "".join(secrets.choice(ALPHABET) for _ in range(4)),
            "key_hash": secrets.token_hex(32),
            "permissions": [],
            "metadata": {},
            "org_role_permissions": [],
            "workspace_role_permissions": [],
            "is_active": True,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]


def _cold_read(ks: KeySentry, prefix: str, suffix: str, key_id: str) -> None:
    ks.store.find_candidates(prefix, suffix)
    with ks.store.read() as session:
        session.get_key(key_id)


def measure(url: str, rounds: int) -> dict[int, float]:
    """Median µs of one cold read at each size of the app."""
    ks = KeySentry(url, usage_interval=None)
    ks.create_api_auth_app(app_slug="bench", name="Bench", key_prefix="sk_bench")
    issued = ks.create_api_key("bench", "probe")
    parsed = parse_key(issued.secret)
    app_id = ks.get_api_auth_app("bench").id
    engine = ks.store.engine  # type: ignore[attr-defined]
    results: dict[int, float] = {}
    have = 1
    for size in SIZES:
        with engine.begin() as conn:
            for start in range(have, size, 5000):
                conn.execute(KEYS.insert(), _filler(app_id, min(5000, size - start), start))
            name = conn.dialect.name
            analyse = {"sqlite": "ANALYZE", "postgresql": "ANALYZE keysentry_keys"}
            conn.exec_driver_sql(analyse.get(name, "ANALYZE TABLE keysentry_keys"))
        have = size
        for _ in range(20):
            _cold_read(ks, parsed.prefix, parsed.suffix, issued.key.id)  # warm the pool
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            _cold_read(ks, parsed.prefix, parsed.suffix, issued.key.id)
            times.append(time.perf_counter() - started)
        results[size] = statistics.median(times) * 1e6
    ks.close()
    return results


def _stores(tmp: Path) -> list[tuple[str, str, Any]]:
    stores: list[tuple[str, str, Any]] = [("SQLite", f"sqlite:///{tmp}/scaling.db", None)]
    try:
        import psycopg

        pg = psycopg.connect(PG_URL, connect_timeout=2, autocommit=True)
        pg.execute("DROP SCHEMA IF EXISTS ks_scaling CASCADE")
        pg.execute("CREATE SCHEMA ks_scaling")
        drop = lambda: pg.execute("DROP SCHEMA ks_scaling CASCADE")  # noqa: E731
        stores.append(("PostgreSQL", f"{PG_URL}?options=-csearch_path%3Dks_scaling", drop))
    except Exception as exc:  # any failure means: skip this store
        print(f"(PostgreSQL skipped: {exc})")
    try:
        import pymysql

        my = pymysql.connect(host="127.0.0.1", user="root", connect_timeout=2, autocommit=True)
        my.cursor().execute("DROP DATABASE IF EXISTS ks_scaling")
        my.cursor().execute("CREATE DATABASE ks_scaling CHARACTER SET utf8mb4")
        drop = lambda: my.cursor().execute("DROP DATABASE ks_scaling")  # noqa: E731
        stores.append(("MySQL/MariaDB", MYSQL_URL.replace("/test", "/ks_scaling"), drop))
    except Exception as exc:
        print(f"(MySQL skipped: {exc})")
    return stores


def main(argv: list[str] | None = None) -> int:
    rounds = 50 if argv and "--quick" in argv else 300
    print(f"{'cold lookup (µs, median)':<24}" + "".join(f"{n:>12,}" for n in SIZES)
          + f"{'10⁵ / 10²':>12}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name, url, drop in _stores(Path(tmp)):
            try:
                times = measure(url, rounds)
            finally:
                if drop is not None:
                    drop()
            ratio = times[SIZES[-1]] / times[SIZES[0]]
            print(f"{name:<24}" + "".join(f"{times[n]:>12.0f}" for n in SIZES) + f"{ratio:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
