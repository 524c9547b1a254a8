"""Run every benchmark scenario and print one table of ratios.

Each scenario times "ours" and a baseline alternately in the same process, several rounds,
and reports the medians and their ratio. The machines are shared and noisy: read ratios, not
absolute numbers, and never turn these into timed tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import asgi, keys, limiters, stores


@dataclass
class Result:
    scenario: str
    ours: str
    baseline: str
    ours_us: float
    baseline_us: float
    spread_pct: float

    @property
    def ratio(self) -> float:
        """ours / baseline time: how many baselines one of ours costs."""
        return self.ours_us / self.baseline_us


def per_call_us(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number * 1e6


def compare(
    scenario: str,
    ours: tuple[str, Callable[[], object]],
    baseline: tuple[str, Callable[[], object]],
    *,
    number: int,
    rounds: int,
) -> Result:
    """Time *ours* and *baseline* alternately, *rounds* times *number* calls each."""
    ours_t: list[float] = []
    base_t: list[float] = []
    for _ in range(rounds):
        ours_t.append(per_call_us(ours[1], number))
        base_t.append(per_call_us(baseline[1], number))
    med = statistics.median(ours_t)
    spread = (max(ours_t) - min(ours_t)) / med * 100 if med else 0.0
    return Result(scenario, ours[0], baseline[0], med, statistics.median(base_t), spread)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about 10 s)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 9
    results = [
        *keys.scenarios(compare, rounds),
        *asgi.scenarios(compare, rounds),
        *limiters.scenarios(compare, rounds),
        *stores.scenarios(compare, rounds),
    ]
    header = f"{'scenario':<34}{'ours (us)':>11}{'baseline (us)':>15}{'ratio':>8}{'spread':>8}"
    print(header)
    for r in results:
        print(
            f"{r.scenario:<34}{r.ours_us:>11.2f}{r.baseline_us:>15.2f}"
            f"{r.ratio:>8.2f}{r.spread_pct:>7.0f}%"
        )
        print(f"    ours: {r.ours}\n    baseline: {r.baseline}")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = [asdict(r) | {"ratio": r.ratio} for r in results]
    (args.out / "results.json").write_text(json.dumps(payload, indent=2))
    return 0
