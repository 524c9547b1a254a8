"""A verification with credits against the same without, side by side in one run, in
process and on Redis (our own server on a spare port): time per ``ks.verify`` and, on Redis,
script calls per request (one either way). ``python -m benchmarks.credits``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.cluster import _script_calls
from benchmarks.run import compare
from benchmarks.world import HUGE
from keysentry import KeySentry


def _pair(ks: KeySentry) -> tuple[str, str]:
    ks.create_rate_limit_scheme("bench", "Bench", [{"unit": "minute", "max_requests": HUGE}])
    ks.create_api_auth_app("bench", "Bench", "sk_live", rate_limit_scheme_slug="bench")
    plain = ks.create_api_key("bench", "plain").secret
    metered = ks.create_api_key("bench", "metered", credits=10**12).secret
    for secret in (plain, metered):
        assert ks.verify(secret).allowed  # cached, and the first lease taken
    return metered, plain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.credits", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    from tests.own_services import OwnRedis

    with tempfile.TemporaryDirectory() as tmp:
        server = OwnRedis(Path(tmp) / "redis")
        server.start()
        try:
            for where, url in (("in process", None), ("on Redis", server.url)):
                ks: Any = KeySentry("memory://", limiter_url=url, usage_interval=None,
                                    sync_interval=None)  # fmt: skip
                metered, plain = _pair(ks)
                result = compare(
                    f"ks.verify, 1 rule, {where}: a key with credits vs without",
                    ("with credits", lambda ks=ks, key=metered: ks.verify(key)),
                    ("without", lambda ks=ks, key=plain: ks.verify(key)),
                    number=2000 if url is None else 500,
                    rounds=args.rounds,
                )
                more = result.ours_us / result.baseline_us - 1
                line = (f"{result.scenario}\n  with {result.ours_us:.2f} us, without "
                        f"{result.baseline_us:.2f} us ({more:+.0%})")  # fmt: skip
                if url is not None:
                    before = _script_calls([server.port])
                    for _ in range(1000):
                        ks.verify(metered)
                    calls = (_script_calls([server.port]) - before) / 1000
                    line += f"; script calls per request {calls:.2f}"
                print(line)
                ks.close()
        finally:
            server.stop_if_running()
    return 0


if __name__ == "__main__":
    sys.exit(main())
