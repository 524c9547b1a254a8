"""``python -m benchmarks.propagation [--changes N]``: how long a revocation or rotation made in
one process takes to reach 4 uvicorn workers on PostgreSQL, with Redis pub/sub and with the
event log alone (DESIGN.md 7; issue: p99 <= 100 ms with Redis, max <= sync_interval + 1 s
without). Needs the PostgreSQL and Redis of the test suite; run from the repository root."""

from __future__ import annotations

import argparse
import secrets
import tempfile
from pathlib import Path

import psycopg
from tests.conftest import PG_ADMIN_URL, REDIS_URL
from tests.servers.propagation import measure
from tests.test_processes import uvicorn

from keysentry import KeySentry


def run(redis: bool, kind: str, changes: int, window: float) -> str:
    schema = f"ks_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    env = {"KEYSENTRY_DATABASE_URL": url}
    if redis:
        env["KEYSENTRY_LIMITER_URL"] = REDIS_URL
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            KeySentry(url, limiter_url=env.get("KEYSENTRY_LIMITER_URL")) as ks,
        ):
            ks.create_api_auth_app("api", "API", "sk_live")
            with uvicorn(Path(tmp), env, workers=4) as port:
                result = measure(port, ks, "api", kind=kind, changes=changes, window=window)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return f"{kind:7} {'Redis pub/sub' if redis else 'event log only':15} {result.summary()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    print(run(True, "revoke", args.changes, 0.3))
    print(run(True, "rotate", args.changes, 0.3))
    print(run(False, "revoke", max(args.changes // 10, 5), 2.2))


if __name__ == "__main__":
    main()
