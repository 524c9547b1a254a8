"""CPU instructions per request, counted with valgrind's callgrind: repeatable where time is not.

``python -m benchmarks.instructions`` runs the ASGI in-process pair of ``benchmarks/asgi.py``
(bare Starlette, the same app behind ``KeySentryMiddleware`` -- with usage analytics, as by
default, without them, and with Prometheus metrics too -- behind the hand-written
floor of ``benchmarks/floor.py``, and behind keysentry's own path written as one function,
``benchmarks/inlined.py``; and FastAPI bare and with ``Depends(ks.depends(...))``, from
``benchmarks/frameworks.py``) under callgrind, counting only the requests: each process
starts with callgrind's instrumentation off, sets up and answers 50 requests, then
``callgrind_control`` switches counting on for *requests* more and dumps the counts after
them; the count over *requests* is the instructions one request costs. The counts do not
move with the machine's load (callgrind counts, it does not time), so a change to the hot
path can be judged by a few hundred instructions. They are not time: a cache miss costs no
more instructions than a hit.

The key cache reads no event log here (``sync_interval=None``): under valgrind Python runs
about 50 times slower, and the once-a-second read would come every few requests.
Needs ``valgrind`` (``apt-get install valgrind``); a run takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

VARIANTS = ("bare", "floor", "inlined", "keysentry", "keysentry-no-analytics",
            "keysentry-metrics", "keysentry-credits", "fastapi-bare", "fastapi")  # fmt: skip
# KeySentry's options per variant: analytics (on by default) off, and Prometheus metrics on
_OPTIONS: dict[str, dict[str, Any]] = {
    "keysentry-no-analytics": {"analytics": False},
    "keysentry-metrics": {"metrics": True},
}
_EVENTS = re.compile(rb"^events:[ \t]*(.*)$", re.M)
_TOTALS = re.compile(rb"^totals:[ \t]*(.*)$", re.M)
_SECONDS = 600  # generous: a loaded machine under valgrind


def _serve(variant: str) -> Any:
    """The ``run(n)`` of *variant*'s app (see ``benchmarks/asgi.py``)."""
    from benchmarks.asgi import runner
    from benchmarks.world import bench_key
    from keysentry import KeySentry

    options = _OPTIONS.get(variant, {})
    ks = KeySentry("memory://", usage_interval=None, sync_interval=None, **options)
    if variant == "keysentry-credits":  # a balance that outlasts the run: leases of 1,000
        return runner("keysentry", ks, bench_key(ks, credits=10**12))
    if variant.startswith("fastapi"):  # Depends(ks.depends(...)), beside bare FastAPI
        from benchmarks.asgi import _caller
        from benchmarks.frameworks import fastapi_apps

        secret = bench_key(ks)
        bare, protected = fastapi_apps(ks)
        headers = [(b"host", b"localhost"), (b"authorization", f"Bearer {secret}".encode())]
        return _caller(bare if variant == "fastapi-bare" else protected, headers)
    return runner("keysentry" if options else variant, ks, bench_key(ks))


def _child(variant: str, requests: int) -> None:
    run = _serve(variant)
    run(50)  # warm: every cache filled, every lazy import done
    # the parent switches counting on between "ready" and the go-ahead, and dumps after "done"
    print("ready", flush=True)
    sys.stdin.readline()
    run(requests)
    print("done", flush=True)
    sys.stdin.readline()


def missing() -> str | None:
    """What this machine lacks to count instructions, or ``None``."""
    for tool in ("valgrind", "callgrind_control"):  # the second is a Perl script
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install valgrind)"
    return None


def control(pid: int, option: str) -> None:
    """Send ``callgrind_control`` *option* (``--instr=on``, ``--dump``) to the valgrind
    process *pid*; it answers once the process has acted on it."""
    done = subprocess.run(["callgrind_control", option, str(pid)], capture_output=True,
                          timeout=_SECONDS, check=False)  # fmt: skip
    if done.returncode != 0 or b"OK" not in done.stdout:
        output = (done.stdout + done.stderr).decode(errors="replace")
        raise RuntimeError(f"callgrind_control {option} failed: {output[-2000:]}")


def dumped(directory: str) -> list[int]:
    """The instructions of each thread in the first dump written to *directory*
    (``callgrind.out.1``, or ``callgrind.out.1-01``, ``-02``... with ``--separate-threads``),
    the main thread's first."""
    return [thread["Ir"] for thread in dumped_events(directory)]


def dumped_events(directory: str) -> list[dict[str, int]]:
    """Every event callgrind counted, per thread, in the first dump written to *directory*
    (see :func:`dumped`): ``Ir``, the instructions, and with its cache and branch
    simulation, misses (``I1mr``, ``D1mr``, ``D1mw``...) and mispredictions (``Bcm``, ``Bim``)."""
    threads = []
    for path in sorted(Path(directory).glob("callgrind.out.1*")):
        text = path.read_bytes()
        names, totals = _EVENTS.search(text), _TOTALS.search(text)
        if names is not None and totals is not None:
            counts = map(int, totals.group(1).split())
            threads.append(dict(zip(names.group(1).decode().split(), counts, strict=False)))
    return threads


def count(variant: str, requests: int) -> int:
    """Instructions the process for *variant* runs while it serves *requests* requests,
    set up and warmed beforehand (not counted)."""
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryFile() as log:
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.out",
            sys.executable, "-m", "benchmarks.instructions", "--child", variant, str(requests),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        with subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=log) as child:  # fmt: skip
            assert child.stdin is not None  # both are pipes
            assert child.stdout is not None
            try:
                if child.stdout.readline() == b"ready\n":
                    control(child.pid, "--instr=on")
                    child.stdin.write(b"go\n")
                    child.stdin.flush()
                    if child.stdout.readline() == b"done\n":
                        control(child.pid, "--dump")
                child.stdin.close()
                child.wait(_SECONDS)
            finally:
                if child.poll() is None:
                    child.kill()
        totals = dumped(out)
        if child.returncode != 0 or not totals:
            log.seek(0)
            error = log.read().decode(errors="replace")
            raise RuntimeError(f"callgrind failed for {variant}: {error[-2000:]}")
    return totals[0]


def per_request(variants: Sequence[str], requests: int = 2000) -> dict[str, float]:
    """Instructions one request of each of *variants* costs (two processes at a time)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        totals = list(pool.map(lambda variant: count(variant, requests), variants))
    return {v: total / requests for v, total in zip(variants, totals, strict=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions",
                                     description=__doc__)  # fmt: skip
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0
    lacking = missing()
    if lacking is not None:
        print(lacking)
        return 2
    counts = per_request(VARIANTS, args.requests)
    bare = counts["bare"]
    print(f"{'ASGI in-process, per request':<34}{'instructions':>14}{'bare / this':>13}")
    for variant, instructions in counts.items():
        if not variant.startswith("fastapi"):  # against bare FastAPI, below
            print(f"{variant:<34}{instructions:>14,.0f}{bare / instructions:>13.2f}")
    floor, inlined, ours = counts["floor"], counts["inlined"], counts["keysentry"]
    print(
        f"keysentry's extra over bare vs the floor's: {(ours - bare) / (floor - bare):.2f}x; "
        f"its path inlined (benchmarks/inlined.py): {(inlined - bare) / (floor - bare):.2f}x"
    )
    off = counts["keysentry-no-analytics"]
    print(f"analytics on vs off: {counts['keysentry'] / off - 1:+.1%} instructions")
    metered = counts["keysentry-metrics"]
    print(f"metrics on vs off (analytics on): {metered / counts['keysentry'] - 1:+.1%}")
    print(f"analytics and metrics on vs both off: {metered / off - 1:+.1%}")
    credited = counts["keysentry-credits"]
    print(f"a key with credits vs without: {credited / counts['keysentry'] - 1:+.1%}")
    fastapi_bare, fastapi = counts["fastapi-bare"], counts["fastapi"]
    print(
        f"FastAPI: bare {fastapi_bare:,.0f}, with Depends(ks.depends(...)) {fastapi:,.0f} "
        f"(bare / this {fastapi_bare / fastapi:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
