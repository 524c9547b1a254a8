"""The Redis limiter on a 3-master Redis Cluster against the same limiter on one Redis, side
by side in one run: ``python -m benchmarks.cluster``.

Both servers are our own (spare ports, stopped by pid when the run ends), started with
``tests/own_services.py``. Two rules a request (per second and per hour, a quota no run
reaches), on one app. Round trips are counted by the servers (``INFO commandstats``: script
calls per request), not by the client.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.run import compare
from benchmarks.world import HUGE
from keysentry.core.ratelimit import compile_limits
from keysentry.limiters import limiter_from_url
from keysentry.models import RateLimitRule


def _script_calls(ports: list[int]) -> int:
    import redis

    total = 0
    for port in ports:
        client = redis.Redis(port=port)
        stats = client.info("commandstats")
        total += sum(
            int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval")
        )
        client.close()
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    from tests.own_services import OwnRedis, OwnRedisCluster

    limits = compile_limits([RateLimitRule(unit=u, max_requests=HUGE) for u in ("second", "hour")])
    checks = tuple((limit, f"{{bench}}:per_key|key_1|{limit.name}") for limit in limits)
    with tempfile.TemporaryDirectory() as tmp:
        single, cluster = OwnRedis(Path(tmp) / "single"), OwnRedisCluster(Path(tmp) / "cluster")
        try:
            single.start()
            cluster.start()
            one: Any = limiter_from_url(single.url, timeout=2.0)
            many: Any = limiter_from_url(cluster.url, timeout=2.0)
            for limiter in (one, many):
                assert limiter.hit(checks, int(time.time() * 1000))[0]  # script loaded
            ports = [n.port for n in cluster.nodes]
            calls = {}
            for name, limiter, where in (("one", one, [single.port]), ("cluster", many, ports)):
                before = _script_calls(where)
                for _ in range(1000):
                    limiter.hit(checks, 0)
                calls[name] = (_script_calls(where) - before) / 1000
            result = compare(
                "limiter, 2 rules: Redis Cluster (3 masters) vs one Redis",
                ("RedisClusterLimiter.hit", lambda: many.hit(checks, 0)),
                ("RedisLimiter.hit, one server", lambda: one.hit(checks, 0)),
                number=500,
                rounds=args.rounds,
            )
            print(f"{result.scenario}")
            print(f"  cluster {result.ours_us:.1f} us, one server {result.baseline_us:.1f} us "
                  f"(one / cluster = {result.baseline_us / result.ours_us:.2f})")  # fmt: skip
            print(f"  script calls per request: cluster {calls['cluster']:.2f}, "
                  f"one server {calls['one']:.2f}")  # fmt: skip
            one.close()
            many.close()
        finally:
            single.stop_if_running()
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
