"""``python -m benchmarks.timing [--rounds N] [--store sqlite|postgres|all]``

Does the time of a refusal tell an attacker that a key with this prefix and suffix exists?
Each round verifies, in random order, two well-formed keys with valid checksums that no
cache has seen:

* an **unknown** key: a suffix that no stored key has;
* a **forged** key: the prefix and the last 4 characters of a real, stored key, with
  another secret (the suffix is the checksum's tail, which an attacker can forge).

Both must be refused with the same 401 in the same time. The script prints the median of
the per-round differences (forged minus unknown) and how often the forged key was slower;
about half the rounds is what "the time does not tell" looks like. The target is a median
gap of at most 5 µs over at least 1,000 rounds on each store.

Forged pairs are found by the birthday bound, not by breaking CRC32: among ~180,000 random
bodies, about 1,000 pairs share a suffix; one of each pair is stored as a real key.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from keysentry import KeySentry
from keysentry.core.keys import ALPHABET, RANDOM_LENGTH, SUFFIX_LENGTH, checksum, random_token

PREFIX = "sk_time"
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _key(body: str) -> str:
    head = f"{PREFIX}_{body}"
    return head + checksum(head)


def colliding_bodies(pairs: int) -> list[tuple[str, str]]:
    """*pairs* pairs of random bodies whose keys end in the same 4 characters."""
    rng = random.Random()
    seen: dict[str, str] = {}
    found: list[tuple[str, str]] = []
    while len(found) < pairs:
        body = "".join(rng.choices(ALPHABET, k=RANDOM_LENGTH))
        suffix = _key(body)[-SUFFIX_LENGTH:]
        other = seen.pop(suffix, None)
        if other is None:
            seen[suffix] = body
        else:
            found.append((other, body))
    return found


class _Bodies:
    """A token factory that hands out chosen key bodies, and random ids."""

    def __init__(self) -> None:
        self.next: str | None = None

    def __call__(self, length: int) -> str:
        if length == RANDOM_LENGTH and self.next is not None:
            body, self.next = self.next, None
            return body
        return random_token(length)


@contextmanager
def _service(url: str | None) -> Iterator[tuple[KeySentry, _Bodies]]:
    bodies = _Bodies()
    with tempfile.TemporaryDirectory() as tmp:
        if url is None:
            url = f"sqlite:///{Path(tmp) / 'timing.db'}"
        # no event-log reads between rounds: every lookup is the same store work
        ks = KeySentry(url, token_factory=bodies, sync_interval=None, usage_interval=None)
        try:
            yield ks, bodies
        finally:
            ks.close()


def _time(verify: Callable[[str], object], key: str) -> int:
    started = time.perf_counter_ns()
    verify(key)
    return time.perf_counter_ns() - started


def measure(url: str | None, rounds: int) -> tuple[float, float, float]:
    """(median gap in µs, share of rounds the forged key was slower, median unknown µs)."""
    with _service(url) as (ks, bodies):
        slug = f"timing-{random_token(6).lower()}"
        ks.create_api_auth_app(app_slug=slug, name="Timing", key_prefix=PREFIX)
        pairs = colliding_bodies(rounds)
        for real, _ in pairs:
            bodies.next = real
            ks.create_api_key(slug, "real")
        verify = ks.verify
        rng = random.Random(11)
        for _ in range(50):  # warm the connections and code paths
            verify(_key(random_token(RANDOM_LENGTH)))
        gaps, unknown_times = [], []
        gc.disable()
        try:
            for _, forged_body in pairs:
                forged = _key(forged_body)
                unknown = _key(random_token(RANDOM_LENGTH))
                if rng.random() < 0.5:
                    t_forged, t_unknown = _time(verify, forged), _time(verify, unknown)
                else:
                    t_unknown, t_forged = _time(verify, unknown), _time(verify, forged)
                gaps.append(t_forged - t_unknown)
                unknown_times.append(t_unknown)
        finally:
            gc.enable()
        ks.delete_api_auth_app(slug)
    slower = sum(gap > 0 for gap in gaps) / len(gaps)
    return statistics.median(gaps) / 1000, slower, statistics.median(unknown_times) / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timing", description=__doc__)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--store", choices=["sqlite", "postgres", "all"], default="all")
    args = parser.parse_args(argv)
    stores = {"sqlite": None, "postgres": PG_URL}
    chosen = stores if args.store == "all" else {args.store: stores[args.store]}
    print(f"timing of a refusal, {args.rounds} interleaved cold rounds per store")
    for name, url in chosen.items():
        try:
            gap, slower, base = measure(url, args.rounds)
        except Exception as exc:  # a store that is not there: say so, measure the rest
            print(f"  {name:<9} skipped: {exc}")
            continue
        print(
            f"  {name:<9} median gap {gap:+6.1f} µs (forged - unknown; target |gap| <= 5), "
            f"forged slower in {slower:4.0%} of rounds, unknown key {base:6.1f} µs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
