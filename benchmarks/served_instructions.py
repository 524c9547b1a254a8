"""CPU instructions per request of an app *served by uvicorn*, counted with callgrind.

``python -m benchmarks.served_instructions`` serves the over-HTTP benchmark's Starlette app
(``benchmarks/http_apps.py``: bare, behind ``KeySentryMiddleware`` on a SQLite database,
behind the hand-written floor, and behind keysentry's path inlined, ``benchmarks/inlined.py``)
with uvicorn under callgrind, sends it requests over one keep-alive connection, and counts
what the whole server process runs: httptools' parsing, the event loop, the app and the
middleware. Each server starts with callgrind's instrumentation off (start-up runs some
five times faster, and is not counted), answers ``_WARM`` requests, then counts only while it
answers *requests* more: ``callgrind_control`` switches counting on before them and dumps
the counts after. The count divided by *requests* is one request's cost.

The serving thread is counted apart from the process's other threads (keysentry's usage
writer): they work once per interval (10 s), which under valgrind's slowdown comes every few
hundred requests instead of every hundred thousand, so their share here is far above what
they cost a served request. Both are printed.

With ``--simulate``, callgrind also simulates the L1 caches (the host's sizes) and a branch
predictor, and the table adds each server's **L1 misses** and **mispredicted branches** per
request. Instructions alone understate what a served request's extra work costs: between
two requests the server's other work (the event loop, httptools, uvicorn) pushes the
middleware's code and data out of the L1 caches, so each line it touches again is a miss,
and a middleware that touches more lines pays more per instruction. The simulated counts
are a model of a core, not time. Runs of one build repeat them to 1-2 %, but where in
memory the process's objects happen to lie decides which lines collide, and a change to any
module (the floor's own unchanged) moved every app's L1 misses by up to 7 %: compare a
change by its ratio to the floor of the same run. The last level is not reported: there
the same effect moved the floor's count by a tenth, and on a real machine neighbours share
it. A simulated run takes about twice as long.

The served counterpart of ``benchmarks.instructions``: the CPU time ``benchmarks.over_http``
reads from ``/proc`` moves with whatever else the machine runs (runs of the same code have
disagreed by half), instructions do not. They are not time: a cache miss costs no more
instructions than a hit. Needs ``valgrind`` and ``pip install -e '.[bench]'`` (uvicorn,
httptools); a run takes about a minute.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from benchmarks.instructions import control, dumped_events, missing
from benchmarks.over_http import PATH, prepare
from keysentry.server import free_port

VARIANTS = ("bare", "floor", "inlined", "keysentry")
_FACTORIES = {"bare": "starlette_bare", "floor": "starlette_floor",
              "inlined": "starlette_inlined", "keysentry": "starlette_protected"}  # fmt: skip
_WARM = 50  # requests before the counted ones: every cache filled, every lazy import done
_STARTUP_SECONDS = 300  # generous: a loaded machine under valgrind
SIMULATION = ("--cache-sim=yes", "--branch-sim=yes")
"""callgrind's options for ``--simulate``: its model of the L1 caches and branch predictor."""
# what --simulate reports, from callgrind's events: instruction and data L1 read misses,
# data L1 write misses; conditional and indirect branches mispredicted
_L1_MISSES = ("I1mr", "D1mr", "D1mw")
_MISPREDICTED = ("Bcm", "Bim")


def _served(
    variant: str, requests: int, env: dict[str, str], secret: str, simulate: bool = False
) -> tuple[dict[str, int], int]:
    """What the server process of *variant* runs while it answers *requests* requests,
    counted after ``_WARM`` others: its serving thread's events (``Ir``, the instructions,
    and with *simulate* the cache misses and branch mispredictions), and the instructions
    of every other thread."""
    port = free_port()
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryFile() as log:
        command = [
            "valgrind", "--tool=callgrind", "--separate-threads=yes", "--instr-atstart=no",
            *(SIMULATION if simulate else ()), f"--callgrind-out-file={out}/callgrind.out",
            sys.executable, "-m", "uvicorn", f"benchmarks.http_apps:{_FACTORIES[variant]}",
            "--factory", "--port", str(port), "--http", "httptools", "--no-access-log",
            "--log-level", "info",
        ]  # fmt: skip
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            _wait_started(server, log)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=_STARTUP_SECONDS)
            try:
                # only the counted requests are counted: start-up, first imports and warm-up
                # (whose cost moves with the machine's load and what was compiled before) are not
                _send(connection, secret, _WARM)
                control(server.pid, "--instr=on")
                _send(connection, secret, requests)
                control(server.pid, "--dump")
            finally:
                connection.close()
            server.send_signal(signal.SIGINT)
            server.wait(_STARTUP_SECONDS)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        threads = dumped_events(out)
        if not threads:
            log.seek(0)
            error = log.read().decode(errors="replace")
            raise RuntimeError(f"callgrind counted nothing for {variant}: {error[-2000:]}")
    return threads[0], sum(thread["Ir"] for thread in threads[1:])


def _wait_started(server: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    # read uvicorn's own log line rather than probing the port: a probe is a request (or a
    # connection) the server counts, and how many a start-up takes varies from run to run
    deadline = time.monotonic() + _STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the served benchmark's server exited while starting")
        log.seek(0)
        if b"Uvicorn running on" in log.read():
            return
        time.sleep(0.2)
    raise RuntimeError(f"uvicorn did not start within {_STARTUP_SECONDS} s under valgrind")


def _send(connection: http.client.HTTPConnection, secret: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {secret}"}
    for _ in range(count):
        connection.request("GET", PATH, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"the served benchmark's server answered {response.status}")


def per_request(
    variants: tuple[str, ...] = VARIANTS, requests: int = 2000
) -> dict[str, tuple[float, float]]:
    """Instructions one served request of each of *variants* costs: in the serving thread,
    and in the other threads (two servers at a time)."""
    counts = _serve_all(variants, requests, simulate=False)
    return {
        variant: (serving["Ir"] / requests, other / requests)
        for variant, (serving, other) in counts.items()
    }


def simulated(
    variants: tuple[str, ...] = VARIANTS, requests: int = 2000
) -> dict[str, dict[str, float]]:
    """Per served request of each of *variants*, in the serving thread: ``instructions``,
    ``L1 misses`` and ``mispredicted branches`` (callgrind's cache and branch simulation)."""
    counts = _serve_all(variants, requests, simulate=True)
    return {
        variant: {
            "instructions": serving["Ir"] / requests,
            "L1 misses": sum(serving.get(event, 0) for event in _L1_MISSES) / requests,
            "mispredicted branches": sum(serving.get(e, 0) for e in _MISPREDICTED) / requests,
        }
        for variant, (serving, _) in counts.items()
    }


def _serve_all(
    variants: tuple[str, ...], requests: int, simulate: bool
) -> dict[str, tuple[dict[str, int], int]]:
    with tempfile.TemporaryDirectory() as tmp:
        env, secret = prepare(Path(tmp))
        env = {**env, "PYTHONHASHSEED": "0"}
        with ThreadPoolExecutor(max_workers=2) as pool:  # two servers at a time
            counts = list(pool.map(lambda v: _served(v, requests, env, secret, simulate),
                                   variants))  # fmt: skip
    return dict(zip(variants, counts, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.served_instructions",
                                     description=__doc__)  # fmt: skip
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="also count L1 misses and mispredicted branches (twice as slow)",
    )
    args = parser.parse_args(argv)
    lacking = missing()
    if lacking is not None:
        print(lacking)
        return 2
    if args.simulate:
        _print_simulated(simulated(VARIANTS, args.requests))
        return 0
    counts = per_request(VARIANTS, args.requests)
    bare = counts["bare"][0]
    print(f"{'served by uvicorn, per request':<32}{'serving thread':>16}{'over bare':>11}"
          f"{'other threads':>15}")  # fmt: skip
    for variant, (serving, other) in counts.items():
        print(f"{variant:<32}{serving:>16,.0f}{serving - bare:>11,.0f}{other:>15,.0f}")
    floor = counts["floor"][0] - bare
    extra = (counts["keysentry"][0] - bare) / floor
    inlined = (counts["inlined"][0] - bare) / floor
    print(f"keysentry's extra / the floor's extra, serving thread: {extra:.2f}x "
          f"(its path inlined, benchmarks/inlined.py: {inlined:.2f}x)")  # fmt: skip
    return 0


def _print_simulated(counts: dict[str, dict[str, float]]) -> None:
    measures = list(counts["bare"])
    print(f"{'served by uvicorn, per request':<32}"
          + "".join(f"{m:>24}" for m in measures))  # fmt: skip
    for variant, values in counts.items():
        cells = "".join(
            f"{values[m]:>13,.0f} ({values[m] - counts['bare'][m]:>+8,.0f})" for m in measures
        )
        print(f"{variant:<32}{cells}")
    print("(in brackets: over bare)")
    for variant in ("keysentry", "inlined"):
        ratios = ", ".join(f"{m} {extra_ratio(counts, variant, m):.2f}x" for m in measures)
        print(f"{variant}'s extra / the floor's extra: {ratios}")


def extra_ratio(counts: dict[str, dict[str, float]], variant: str, measure: str) -> float:
    """*variant*'s *measure* over the bare app's, against the floor's over the bare app's."""
    bare = counts["bare"][measure]
    return (counts[variant][measure] - bare) / (counts["floor"][measure] - bare)


if __name__ == "__main__":
    sys.exit(main())
