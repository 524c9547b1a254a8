"""``python -m benchmarks.propagation [--changes N]``: how long a revocation or rotation made in
one process takes to reach 4 uvicorn workers on PostgreSQL, with Redis pub/sub and with the
event log alone, and 4 workers sharing a SQLite file (event log alone). docs/design.md §7; the
issue's targets: p99 <= 100 ms with Redis, max <= sync_interval + 1 s without. Needs the
PostgreSQL and Redis of the test suite; run from the repository root."""

from __future__ import annotations

import argparse
import secrets
import tempfile
from pathlib import Path

import psycopg
from tests.conftest import PG_ADMIN_URL, REDIS_URL
from tests.servers.propagation import measure
from tests.system.test_processes import uvicorn

from keysentry import KeySentry


def run(
    redis: bool,
    kind: str,
    changes: int,
    window: float,
    *,
    sqlite: bool = False,
    limiter_url: str | None = None,
    via: str = "Redis pub/sub",
) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        if sqlite:
            url = f"sqlite:///{tmp}/shared.db"
            return _measure(url, Path(tmp), redis, kind, changes, window, "SQLite",
                            limiter_url, via)  # fmt: skip
        schema = f"ks_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
            return _measure(url, Path(tmp), redis, kind, changes, window, "PostgreSQL",
                            limiter_url, via)  # fmt: skip
        finally:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def run_mysql(kind: str, changes: int, window: float) -> str:
    """:func:`run` on a fresh MySQL/MariaDB database, with Redis pub/sub."""
    import pymysql

    database = f"ks_bench_{secrets.token_hex(4)}"
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    admin.cursor().execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"mysql://root@127.0.0.1:3306/{database}"
            return _measure(url, Path(tmp), True, kind, changes, window, "MySQL")
    finally:
        admin.cursor().execute(f"DROP DATABASE `{database}`")
        admin.close()


def _measure(
    url: str,
    tmp: Path,
    redis: bool,
    kind: str,
    changes: int,
    window: float,
    store: str,
    limiter_url: str | None = None,
    via: str = "Redis pub/sub",
) -> str:
    env = {"KEYSENTRY_DATABASE_URL": url}
    if redis:
        env["KEYSENTRY_LIMITER_URL"] = limiter_url or REDIS_URL
    with KeySentry(url, limiter_url=env.get("KEYSENTRY_LIMITER_URL")) as ks:
        ks.create_api_auth_app("api", "API", "sk_live")
        with uvicorn(tmp, env, workers=4) as port:
            result = measure(port, ks, "api", kind=kind, changes=changes, window=window)
    via = via if redis else "event log only"
    return f"{kind:7} {store:11} {via:15} {result.summary()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--engines", action="store_true",
                        help="also MySQL, and Redis Cluster and Sentinel of our own")  # fmt: skip
    args = parser.parse_args()
    if args.engines:
        _engines(args.changes)
        return
    print(run(True, "revoke", args.changes, 0.3))
    print(run(True, "rotate", args.changes, 0.3))
    print(run(False, "revoke", max(args.changes // 10, 5), 2.2))
    print(run(False, "revoke", max(args.changes // 10, 5), 2.2, sqlite=True))


def _engines(changes: int) -> None:
    from tests.own_services import OwnRedisCluster, OwnSentinels

    print(run_mysql("revoke", changes, 0.3))
    with tempfile.TemporaryDirectory() as tmp:
        cluster, sentinels = OwnRedisCluster(Path(tmp) / "c"), OwnSentinels(Path(tmp) / "s")
        (Path(tmp) / "s").mkdir()
        try:
            cluster.start()
            sentinels.start()
            print(run(True, "revoke", changes, 0.3, limiter_url=cluster.url, via="Cluster pub/sub"))
            print(run(True, "revoke", changes, 0.3, limiter_url=sentinels.url,
                      via="Sentinel pub/sub"))  # fmt: skip
        finally:
            cluster.stop()
            sentinels.stop()


if __name__ == "__main__":
    main()
