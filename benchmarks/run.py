"""Run every benchmark scenario; print one table of ratios and write it as JSON, Markdown
and a bar chart (PNG).

Each scenario times "ours" and a baseline alternately in the same process, several rounds,
and reports the medians, their spread and one ratio, *speed*: baseline time / our time. For
"bare app vs app behind keysentry" that is protected/bare throughput (1.0 = free); against a
peer library, how many times faster we are. The machines are shared and noisy: read ratios,
not absolute numbers, and never turn these into timed tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import asgi, frameworks, keys, limiters, over_http, peers, stores


@dataclass
class Result:
    """One scenario: median microseconds per call of ours and of the baseline."""

    scenario: str
    ours: str
    baseline: str
    ours_us: float
    baseline_us: float
    spread_pct: float
    """(max - min) / median of our rounds, in percent."""
    baseline_spread_pct: float
    target: float | None = None
    """The speed this scenario should reach, if it has one."""
    detail: str = ""
    """What else was measured (p99 latency, the load generator)."""
    interval: tuple[float, float] | None = None
    """A 90 % interval of the speed, where the scenario estimates one (the served target)."""

    @property
    def speed(self) -> float:
        """baseline time / our time: > 1 means ours is faster."""
        return self.baseline_us / self.ours_us

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.speed >= self.target


def per_call_us(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number * 1e6


def _spread(times: list[float]) -> float:
    med = statistics.median(times)
    return (max(times) - min(times)) / med * 100 if med else 0.0


def compare(
    scenario: str,
    ours: tuple[str, Callable[[], object]],
    baseline: tuple[str, Callable[[], object]],
    *,
    number: int,
    rounds: int,
    target: float | None = None,
) -> Result:
    """Time *ours* and *baseline* alternately, *rounds* times *number* calls each."""
    ours_t: list[float] = []
    base_t: list[float] = []
    for _ in range(rounds):
        ours_t.append(per_call_us(ours[1], number))
        base_t.append(per_call_us(baseline[1], number))
    return Result(
        scenario, ours[0], baseline[0], statistics.median(ours_t), statistics.median(base_t),
        _spread(ours_t), _spread(base_t), target,
    )  # fmt: skip


def _verdict(r: Result) -> str:
    if r.target is None:
        return ""
    verdict = f"{'met' if r.met else 'MISSED'} (>= {r.target:g})"
    if r.interval is not None and r.interval[0] < r.target <= r.interval[1]:
        verdict += ", within this run's noise"  # the other verdict lies inside the interval
    return verdict


def table(results: list[Result]) -> str:
    lines = [f"{'scenario':<52}{'ours us':>11}{'base us':>11}{'speed':>8}{'spread':>8}  target"]
    for r in results:
        lines.append(
            f"{r.scenario:<52}{r.ours_us:>11.2f}{r.baseline_us:>11.2f}{r.speed:>8.2f}"
            f"{r.spread_pct:>7.0f}%  {_verdict(r)}"
        )
        if r.detail:
            lines.append(f"{'':<4}{r.detail}")
    return "\n".join(lines)


def markdown(results: list[Result], meta: dict[str, str]) -> str:
    rows = [
        f"Measured {meta['date']} with `{meta['command']}` on {meta['machine']}.",
        "",
        "| scenario | ours | baseline | ours µs | baseline µs | speed | spread | target | notes |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.scenario} | {r.ours} | {r.baseline} | {r.ours_us:.2f} | {r.baseline_us:.2f}"
            f" | **{r.speed:.2f}** | {r.spread_pct:.0f}% | {_verdict(r)} | {r.detail} |"
        )
    rows += ["", "speed = baseline time / our time (medians); spread = (max - min) / median "
             "of our rounds."]  # fmt: skip
    return "\n".join(rows) + "\n"


def chart(results: list[Result], path: Path) -> bool:
    """A horizontal bar per scenario (speed, log scale), its target as a tick."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  no chart: matplotlib is not installed (pip install -e '.[bench]')")
        return False
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(results) + 1.2))
    names = [r.scenario for r in results][::-1]
    speeds = [r.speed for r in results][::-1]
    colours = ["#999999" if r.met is None else "#2a9d8f" if r.met else "#e76f51"
               for r in results][::-1]  # fmt: skip
    ax.barh(names, speeds, color=colours)
    for y, r in enumerate(results[::-1]):
        if r.target is not None:
            ax.plot([r.target, r.target], [y - 0.4, y + 0.4], color="black", linewidth=2)
        ax.text(r.speed, y, f" {r.speed:.2f}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="#555555", linewidth=0.8, linestyle="--")
    ax.set_xlabel("speed = baseline time / our time (log; black tick: target)")
    ax.set_title("keysentry vs baselines\n(green: target met, red: missed, grey: no target)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (well under 1 min)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--no-http", action="store_true", help="skip the over-HTTP pairs")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 9
    started = time.monotonic()
    results: list[Result] = [
        *keys.scenarios(compare, rounds),
        *asgi.scenarios(compare, rounds),
        *frameworks.scenarios(compare, rounds),
        *peers.scenarios(compare, rounds),
        *limiters.scenarios(compare, rounds),
        *stores.scenarios(compare, rounds),
    ]
    if not args.no_http:
        # many short rounds: the served target compares two differences of CPU times,
        # which magnify each round's noise (3 rounds of 4 s gave 1.2x-1.6x for one build)
        results += over_http.scenarios(rounds=1 if args.quick else 10,
                                       seconds=1.5 if args.quick else 2.0)  # fmt: skip
    print(table(results))
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks" + (" --quick" if args.quick else ""),
        "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}",
        "seconds": f"{time.monotonic() - started:.0f}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta,
        "results": [asdict(r) | {"speed": r.speed, "met": r.met} for r in results],
    }
    (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results, meta))
    drawn = chart(results, args.out / "speed.png")
    written = ["results.json", "results.md"] + (["speed.png"] if drawn else [])
    print(f"\n{meta['seconds']} s; wrote {', '.join(str(args.out / w) for w in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
