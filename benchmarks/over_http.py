"""Over HTTP: bare vs protected apps served by real servers, loaded by a separate process.

Pairs (benchmarks/http_apps.py): Starlette served by uvicorn (one worker, httptools), and
Flask served by gunicorn (one worker, 4 threads: a WSGI deployment's usual shape). Both apps
of a pair run side by side on loopback; the load goes to one, then the other, alternately,
several rounds. The load generator is ``wrk`` when it is installed (Debian: ``apt-get
install wrk``), else ``python -m benchmarks.loadgen`` in its own process.

Reported per pair: requests per second (as µs per request, so speed = protected/bare
throughput), the p99 latency, and the **server's CPU time per request**, read from
``/proc`` for the server and its workers. On a 2-core machine the load generator takes one
core and the server the other, so throughput moves with whatever else runs; CPU time per
request is the steadier measure of what the middleware costs. The uvicorn pair also serves
the app behind the hand-written floor of ``benchmarks/floor.py`` (not keysentry), reported
against the same bare server: how close a pure-Python middleware comes when served; and a
row for the served target, keysentry's extra CPU over the bare app against the floor's. That
row also serves the floor from a second, identical process: what it reads against the first
is this run's noise, printed beside the target with a 90 % interval of the ratio.

``python -m benchmarks`` runs both pairs, 10 rounds of 2 s. Alone, ``python -m
benchmarks.over_http --rounds 40 --pair starlette`` runs them longer: the served target's
interval narrows as the rounds grow (on a noisy VM one server's loads spread by a tenth or
more, and the ratio of two differences magnifies that).

``--against PATH`` (repeatable) also serves keysentry from another source tree, a checkout
or its ``src`` directory (a worktree of another commit, a scratch copy), as one more server
in the same rounds, and gives it a served-target row of its own: two builds compared side
by side in one run, where comparing two runs compares two states of the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.world import bench_key
from keysentry import KeySentry
from keysentry.server import free_port

ROOT = Path(__file__).resolve().parent.parent
PATH = "/users/42"
CONNECTIONS = 16
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Load:
    """One load run against one server."""

    requests: int
    rps: float
    p99_ms: float
    non_200: int
    cpu_us: float | None
    """The server's CPU time per request, when /proc tells."""


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids += _tree(int(child))
    return pids


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process *pid* and its descendants (Linux), else None."""
    total = 0.0
    try:
        for each in _tree(pid):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    except (OSError, IndexError, ValueError):
        return None
    return total


class Server:
    """A server process on a free loopback port."""

    def __init__(self, command: Callable[[int], list[str]], env: dict[str, str]) -> None:
        self.port = free_port()
        argv = command(self.port)
        self.name = next((part for part in argv if "http_apps:" in part), "server")
        """The app it serves (``benchmarks.http_apps:...``), for error messages."""
        # a file, not a pipe, which a chatty server could fill; closed by stop()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self._log
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        import http.client

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log.seek(0)
                error = self._log.read().decode(errors="replace")
                raise RuntimeError(f"benchmark server exited: {error[-2000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", PATH)
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("benchmark server did not start within 30 s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk(port: int, headers: list[str], seconds: float) -> dict[str, float]:
    # wrk takes whole seconds
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{PATH}"], capture_output=True, text=True, check=True
    ).stdout
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not (p99 and done and rps):
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if errors:
        raise RuntimeError(f"wrk reported {errors.group(0)}")
    return {
        "requests": int(done.group(1)),
        "rps": float(rps.group(1)),
        "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)],
        "non_200": int(bad.group(1)) if bad else 0,
    }


def _python_load(port: int, headers: list[str], seconds: float) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.loadgen", "--port", str(port), "--path", PATH,
               "--seconds", str(seconds), "--connections", str(CONNECTIONS)]  # fmt: skip
    for header in headers:
        command += ["--header", header]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def generator() -> str:
    """The load generator this machine has: ``"wrk"`` or ``"python"``."""
    return "wrk" if shutil.which("wrk") else "python"


def load(server: Server, headers: list[str], seconds: float) -> Load:
    """Load *server* for *seconds*; measure it."""
    before = cpu_seconds(server.process.pid)
    run = _wrk if generator() == "wrk" else _python_load
    try:
        result = run(server.port, headers, seconds)
    except RuntimeError as exc:  # say which server: a run has four or five
        raise RuntimeError(f"{server.name}: {exc}") from exc
    after = cpu_seconds(server.process.pid)
    requests = int(result["requests"])
    if result["non_200"] or not requests:
        raise RuntimeError(f"{server.name} answered {result['non_200']} non-200 responses")
    cpu = None if before is None or after is None else (after - before) / requests * 1e6
    return Load(requests, result["rps"], result["p99_ms"], int(result["non_200"]), cpu)


def _uvicorn(factory: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable, "-m", "uvicorn", f"benchmarks.http_apps:{factory}", "--factory",
        "--port", str(port), "--http", "httptools", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def _gunicorn(factory: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "gthread",
        "--threads", "4", "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
        f"benchmarks.http_apps:{factory}()",
    ]  # fmt: skip


def _missing(*modules: str) -> str | None:
    import importlib.util

    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return ", ".join(absent) if absent else None


def prepare(directory: Path) -> tuple[dict[str, str], str]:
    """A SQLite database in *directory* with the benchmark's app, rule and key; returns the
    servers' environment and the key."""
    database = f"sqlite:///{directory}/bench.db"
    with KeySentry(database) as ks:
        secret = bench_key(ks)
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "KEYSENTRY_BENCH_DB": database,
           "KEYSENTRY_BENCH_DIGEST": hashlib.sha256(secret.encode()).hexdigest(),
           "PYTHONPATH": os.pathsep.join(p for p in paths if p)}  # fmt: skip
    return env, secret


PAIRS = ("starlette", "flask")


def _serving_from(env: dict[str, str], tree: Path) -> dict[str, str]:
    """*env* with keysentry imported from *tree* (the benchmarks from this checkout)."""
    return {**env, "PYTHONPATH": os.pathsep.join((str(ROOT), str(tree)))}


def source_tree(path: str | Path) -> Path:
    """The directory to put first on ``PYTHONPATH`` to serve keysentry from *path* (a
    checkout, or its ``src`` directory), checked by importing it there.

    Raises:
        ValueError: *path* holds no keysentry, or a server started there would import
            another one (an installed copy shadowing it).
    """
    given = Path(path).resolve()
    found = next((d for d in (given / "src", given) if (d / "keysentry" / "__init__.py").is_file()),
                 None)  # fmt: skip
    if found is None:
        raise ValueError(f"{path}: no keysentry package in it or in its src/")
    env = _serving_from(dict(os.environ), found)
    check = subprocess.run(
        [sys.executable, "-c", "import keysentry; print(keysentry.__file__)"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if check.returncode:  # a server would fail the same way: say why now
        error = (check.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"{path}: importing keysentry from {found} failed: {error}")
    imported = check.stdout.strip()
    if Path(imported).resolve() != found / "keysentry" / "__init__.py":
        raise ValueError(f"{path}: a server started there imports keysentry from {imported!r}")
    return found


def scenarios(
    rounds: int,
    seconds: float,
    pairs: tuple[str, ...] = PAIRS,
    against: tuple[Path, ...] = (),
) -> list[Any]:
    """Measure each of *pairs* *rounds* times, *seconds* of load per server per round;
    with the Starlette pair, also keysentry served from each of *against* (source trees
    from :func:`source_tree`)."""
    from benchmarks.run import Result

    known = {
        "starlette": ("Starlette over HTTP (uvicorn)", _uvicorn("starlette_bare"),
                      _uvicorn("starlette_protected"), ("uvicorn", "httptools"), 0.85,
                      ("Starlette + KeySentryMiddleware (cache hit, 1 rule)", "bare Starlette"),
                      _uvicorn("starlette_floor")),
        "flask": ("Flask over HTTP (gunicorn gthread)", _gunicorn("flask_bare"),
                  _gunicorn("flask_protected"), ("gunicorn", "flask"), None,
                  ("Flask + KeySentryWSGIMiddleware (cache hit, 1 rule)", "bare Flask"), None),
    }  # fmt: skip
    chosen = [known[pair] for pair in PAIRS if pair in pairs]
    results: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        env, secret = prepare(Path(tmp))
        auth = [f"Authorization: Bearer {secret}"]
        for name, bare_cmd, ours_cmd, needs, target, labels, floor_cmd in chosen:
            absent = _missing(*needs)
            if absent:
                print(f"  skipped {name}: {absent} not installed; pip install -e '.[bench]'")
                continue
            # the floor twice: the second process is the run's control (see extra_cpu)
            commands = [bare_cmd, ours_cmd] + ([floor_cmd, floor_cmd] if floor_cmd else [])
            envs = [env] * len(commands)
            others = against if floor_cmd else ()
            first_other = len(commands)  # keysentry from other source trees: the last servers
            for tree in others:
                commands.append(ours_cmd)
                envs.append(_serving_from(env, tree))
            servers: list[Server] = []
            try:  # every server started is stopped, also when a later one fails to start
                for command, server_env in zip(commands, envs, strict=True):
                    servers.append(Server(command, server_env))
                for server in servers:  # warm up: imports, caches, the key's first lookup
                    load(server, auth, min(1.0, seconds))
                measured: list[list[Load]] = [[] for _ in servers]
                for round_ in range(rounds):
                    order = range(len(servers)) if round_ % 2 == 0 else range(len(servers))[::-1]
                    for index in order:
                        measured[index].append(load(servers[index], auth, seconds))
            finally:
                for server in servers:
                    server.stop()
            results += _results(Result, name, labels, measured[0], measured[1], target)
            if floor_cmd:
                floor_labels = ("Starlette + benchmarks/floor.py (same work, minimal)", labels[1])
                results += _results(Result, f"{name}, the floor (not keysentry)", floor_labels,
                                    measured[0], measured[2], None)  # fmt: skip
                extra = extra_cpu(Result, name, measured[0], measured[1], measured[2],
                                  measured[3])  # fmt: skip
                if extra is not None:
                    results.append(extra)
                for index, tree in enumerate(others, start=first_other):
                    extra = extra_cpu(Result, f"{name}, keysentry from {tree}", measured[0],
                                      measured[index], measured[2], measured[3])  # fmt: skip
                    if extra is not None:
                        results.append(extra)
    return results


EXTRA_TARGET = 1.3
"""keysentry's extra server CPU per request may be at most this many times the floor's."""


def extra_cpu(
    result: Any,
    name: str,
    bare: list[Load],
    ours: list[Load],
    floor: list[Load],
    control: list[Load] | None = None,
) -> Any | None:
    """The served target's row: keysentry's extra CPU per request over the bare app against
    the floor's, each the difference of two servers' medians over the rounds. Its *speed* is
    the floor's extra / ours: the target, ours at most 1.3 times the floor's, is a speed of
    at least 1/1.3.

    Medians are taken per server, not of per-round differences: a load's CPU time moves by
    itself (by a third from one load to the next, on a shared VM), not with the round, so
    pairing a load with another server's adds both of their noise. *control*, the floor
    served by a second process, measures what is left: its extra against the floor's should
    read 1.00x. The detail gives it and a 90 % interval of the ratio (each server's rounds
    resampled)."""
    bare_cpu, ours_cpu, floor_cpu = _cpu(bare), _cpu(ours), _cpu(floor)
    if bare_cpu is None or ours_cpu is None or floor_cpu is None:
        return None
    base = _median(bare_cpu)
    ours_extra, floor_extra = _median(ours_cpu) - base, _median(floor_cpu) - base
    if ours_extra <= 0 or floor_extra <= 0:
        # the bare server measured no cheaper: this run's noise is larger than what it compares
        print(
            f"  no served-target row for {name}: a middleware's median extra CPU was not "
            f"above zero (keysentry {ours_extra:.1f} us, the floor {floor_extra:.1f} us)"
        )
        return None
    ratio = ours_extra / floor_extra
    detail = f"keysentry's extra is {ratio:.2f}x the floor's (target <= {EXTRA_TARGET}x)"
    low, high = _interval(bare_cpu, ours_cpu, floor_cpu)
    detail += f"; 90% interval {low:.2f}x-{high:.2f}x"
    control_cpu = _cpu(control) if control else None
    if control_cpu is not None:
        again = (_median(control_cpu) - base) / floor_extra
        detail += f"; the floor in a second process: {again:.2f}x (this run's noise)"
    return result(
        f"{name}, extra CPU/request: the floor's / ours", "keysentry's extra over bare",
        "the floor's extra over bare", ours_extra, floor_extra,
        _spread(ours_cpu), _spread(floor_cpu), round(1 / EXTRA_TARGET, 3), detail,
        # the ratio's interval as speeds (the floor's / ours); a draw may see no extra of ours
        interval=(1 / high, 1 / low if low > 0 else float("inf")),
    )  # fmt: skip


def _interval(
    bare: list[float], ours: list[float], floor: list[float], resamples: int = 2000
) -> tuple[float, float]:
    """The 5th and 95th percentiles of keysentry's extra / the floor's over *resamples*
    bootstrap draws (each server's rounds drawn with replacement; seeded, so a run's data
    always gives the same interval). A draw whose floor shows no extra counts as unbounded."""
    draw = random.Random(0).choices
    ratios = []
    for _ in range(resamples):
        base = _median(draw(bare, k=len(bare)))
        floor_extra = _median(draw(floor, k=len(floor))) - base
        ours_extra = _median(draw(ours, k=len(ours))) - base
        ratios.append(ours_extra / floor_extra if floor_extra > 0 else float("inf"))
    ratios.sort()
    return ratios[int(0.05 * resamples)], ratios[int(0.95 * resamples) - 1]


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _spread(values: list[float]) -> float:
    med = statistics.median(values)
    return (max(values) - min(values)) / med * 100 if med else 0.0


def _cpu(loads: list[Load]) -> list[float] | None:
    """The CPU time per request of every load, or ``None`` when /proc did not tell one."""
    values = [x.cpu_us for x in loads if x.cpu_us is not None]
    return values if len(values) == len(loads) else None


def _results(
    result: Any,
    name: str,
    labels: tuple[str, str],
    bare: list[Load],
    ours: list[Load],
    target: float | None,
) -> list[Any]:
    wall_ours = [1e6 / load.rps for load in ours]
    wall_bare = [1e6 / load.rps for load in bare]
    p99 = (f"p99 {_median([x.p99_ms for x in ours]):.2f} ms vs "
           f"{_median([x.p99_ms for x in bare]):.2f} ms; "
           f"{_median([x.rps for x in ours]):.0f} vs {_median([x.rps for x in bare]):.0f} req/s; "
           f"load: {generator()}, {CONNECTIONS} connections")  # fmt: skip
    rows = [
        result(
            f"{name}, req/s", *labels,
            _median(wall_ours), _median(wall_bare), _spread(wall_ours), _spread(wall_bare),
            target, p99,
        )
    ]  # fmt: skip
    cpu_ours, cpu_bare = _cpu(ours), _cpu(bare)
    if cpu_ours is not None and cpu_bare is not None:
        rows.append(
            result(
                f"{name}, server CPU/request", *labels,
                _median(cpu_ours), _median(cpu_bare), _spread(cpu_ours), _spread(cpu_bare),
                target, "CPU seconds of the server process and its workers / requests",
            )
        )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the served pairs alone and print their rows."""
    import argparse

    from benchmarks.run import table

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.over_http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=10, help="rounds per pair (default 10)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="seconds of load per server per round (default 2; wrk rounds to whole seconds)",
    )
    parser.add_argument("--pair", choices=(*PAIRS, "both"), default="both")
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="PATH",
        help="also serve keysentry from this checkout or src directory (repeatable, at most "
        "3; the Starlette pair)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 2 or not 1.0 <= args.seconds <= 60.0:
        parser.error("--rounds must be at least 2 and --seconds from 1 to 60")
    pairs = PAIRS if args.pair == "both" else (args.pair,)
    if args.against and "starlette" not in pairs:
        parser.error("--against compares builds on the Starlette pair (it has the floor)")
    if len(args.against) > 3:
        parser.error("--against: at most 3 other builds (each adds a server to every round)")
    try:
        against = tuple(source_tree(path) for path in args.against)
    except ValueError as exc:
        parser.error(f"--against {exc}")
    print(table(scenarios(args.rounds, args.seconds, pairs, against)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
