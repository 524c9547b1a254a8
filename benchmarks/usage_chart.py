"""The pictures and the CLI output of docs/analytics.md, from a real run: a day of traffic
through ``ks.verify`` (a fake clock moves through 24 hours; every request goes through the
whole pipeline, rate limits included) into a SQLite store, then the real queries.

``python -m benchmarks.usage_chart [--out docs/img]`` writes ``usage-by-outcome.svg`` and
``usage-cli.txt`` there.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from keysentry import KeySentry
from keysentry.charts import usage_svg
from keysentry.cli import main as cli
from keysentry.testing import FakeClock

START = datetime(2026, 12, 1, 0, 0, tzinfo=UTC).timestamp()


def simulate(url: str) -> tuple[KeySentry, FakeClock]:
    clock = FakeClock(START)
    ks = KeySentry(url, clock=clock, usage_interval=None)
    ks.create_rate_limit_scheme(
        slug="burst", name="Burst", rules=[{"unit": "minute", "duration": 1, "max_requests": 30}]
    )
    ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["orders:read", "orders:write"],
                           rate_limit_scheme_slug="burst")  # fmt: skip
    web = ks.create_api_key("shop", "web", permissions=["orders:read"]).secret
    batch = ks.create_api_key("shop", "nightly-batch").secret
    old = ks.create_api_key("shop", "legacy")
    ks.revoke_api_key(old.key.id, reason="rotated out")
    rng = random.Random(7)
    for minute in range(24 * 60):
        clock.now = START + 60 * minute
        hour = minute / 60
        load = int(12 + 10 * math.sin((hour - 9) / 24 * 2 * math.pi))  # a daily curve
        for _ in range(load):
            ks.verify(web, permissions="orders:read")
        if rng.random() < 0.05:
            ks.verify(web, permissions="orders:write")  # a bug in the client: 403
        if 2 <= hour < 3:
            for _ in range(40):  # the batch bursts past its 30/minute
                ks.verify(batch)
        if rng.random() < 0.02:
            ks.verify(old.secret)  # someone still has the revoked key
    ks.usage.flush()
    clock.now = START + 86400 - 1
    return ks, clock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.usage_chart", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/usage.db"
        ks, _ = simulate(url)
        with ks:
            query = ks.usage_query("shop", None, timedelta(hours=24), None, "hour", "outcome")
            svg = usage_svg(ks.usage_points(query), query.start, query.end, "hour",
                            title="shop: verifications per hour, by outcome")  # fmt: skip
            (args.out / "usage-by-outcome.svg").write_text(svg + "\n")
        text = io.StringIO()
        until = datetime.fromtimestamp(START + 86400 - 1, UTC).isoformat()
        for command in (["usage", "shop", "--until", until],
                        ["usage", "shop", "--until", until, "--top", "refused"]):  # fmt: skip
            text.write("$ keysentry " + " ".join(command) + "\n")
            with contextlib.redirect_stdout(text):
                cli(["--database-url", url, *command])
            text.write("\n")
        (args.out / "usage-cli.txt").write_text(text.getvalue())
    print(f"wrote {args.out / 'usage-by-outcome.svg'} and {args.out / 'usage-cli.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
