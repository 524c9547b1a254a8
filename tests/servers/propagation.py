"""Measure how long a revocation or rotation made in one process takes to reach every worker
of a running server (tests/system/test_propagation.py asserts the bound; benchmarks/propagation.py
reports the distribution over 200 changes).

While busy clients keep every worker serving (and caching) the keys, the measuring process
revokes (or rotates) one key at a time through the management API and then probes that key's
old secret over fresh connections, so that the probes land on every worker. A *slip* is a 200
for a probe sent after the change returned; a change's delay is the send time of its last
slip (0 when there is none). Probe resolution is a few milliseconds.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from keysentry import KeySentry
from tests.system.test_processes import reply as call


@dataclass
class Result:
    delays: list[float] = field(default_factory=list)  # seconds, one per change
    refused_by: list[set[str]] = field(default_factory=list)  # worker pids that refused
    workers: set[str] = field(default_factory=set)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.delays)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    def summary(self) -> str:
        ms = [d * 1000 for d in self.delays]
        return (f"{len(ms)} changes, {len(self.workers)} workers: delay p50 "
                f"{statistics.median(ms):.1f} ms, p99 {self.percentile(0.99) * 1000:.1f} ms, "
                f"max {max(ms):.1f} ms")  # fmt: skip


def measure(
    port: int,
    ks: KeySentry,
    app_slug: str,
    *,
    kind: str,
    changes: int,
    window: float,
    change: Callable[[str], object] | None = None,
) -> Result:
    """Make *changes* revocations (``kind="revoke"``) or rotations, one at a time, probing
    each old secret for *window* seconds after the change. *change*, given a key id, makes
    the change some other way (the CLI) instead of through *ks*."""
    keys = [ks.create_api_key(app_slug, f"k{n}") for n in range(changes)]
    live = [k.secret for k in keys]
    stop = threading.Event()
    result = Result()

    def busy() -> None:  # keep every worker serving, and caching, the live keys
        while not stop.is_set():
            _, pid = call(port, random.choice(live))
            result.workers.add(pid)

    with ThreadPoolExecutor(4) as background:
        for _ in range(4):
            background.submit(busy)
        for secret in live:  # every key cached by (very likely) every worker
            for _ in range(12):
                call(port, secret)
        try:
            with ThreadPoolExecutor(6) as probes:
                for issued in keys:
                    if change is not None:
                        change(issued.key.id)
                    elif kind == "revoke":
                        ks.revoke_api_key(issued.key.id)
                    else:
                        ks.rotate_api_key(issued.key.id)
                    changed = time.monotonic()
                    live.remove(issued.secret)
                    if not live:
                        live.append(keys[-1].secret)  # keep the busy clients going

                    def probe(
                        secret: str = issued.secret, changed: float = changed
                    ) -> list[tuple[float, int, str]]:
                        seen = []
                        while (sent := time.monotonic()) < changed + window:
                            status, pid = call(port, secret)
                            seen.append((sent - changed, status, pid))
                        return seen

                    replies = [r for f in [probes.submit(probe) for _ in range(6)]
                               for r in f.result()]  # fmt: skip
                    slips = [at for at, status, _ in replies if status == 200]
                    result.delays.append(max(slips, default=0.0))
                    result.refused_by.append({pid for _, s, pid in replies if s != 200})
        finally:
            stop.set()
    return result
