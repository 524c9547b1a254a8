"""The benchmark runner's outputs: the table, JSON, Markdown and the chart are
written from the results and say the same thing. Timing is never asserted here."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmarks import instructions, over_http, run
from benchmarks.run import Result, compare
from benchmarks.world import HUGE

ROOT = Path(__file__).resolve().parents[2]


def test_compare_times_both_sides_and_reports_speed() -> None:
    calls = {"ours": 0, "base": 0}

    def ours() -> None:
        calls["ours"] += 1

    def base() -> None:
        calls["base"] += 1

    result = compare("s", ("o", ours), ("b", base), number=7, rounds=3, target=0.5)
    assert calls == {"ours": 21, "base": 21}
    assert result.speed == result.baseline_us / result.ours_us
    assert result.met == (result.speed >= 0.5)


def test_outputs_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = [
        Result("fast one", "ours", "theirs", 1.0, 4.0, 3.0, 2.0, target=2.0),
        Result("slow one", "ours", "bare", 10.0, 5.0, 1.0, 1.0, target=0.7),
        Result("no target", "ours", "floor", 2.0, 1.0, 1.0, 1.0),
    ]
    for module in ("keys", "asgi", "frameworks", "peers", "limiters", "stores"):
        monkeypatch.setattr(f"benchmarks.run.{module}.scenarios", lambda _c, _r: [])
    monkeypatch.setattr("benchmarks.run.keys.scenarios", lambda _c, _r: fixed)
    assert run.main(["--quick", "--no-http", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "results.json").read_text())
    assert [(r["scenario"], r["speed"], r["met"]) for r in payload["results"]] == [
        ("fast one", 4.0, True), ("slow one", 0.5, False), ("no target", 0.5, None),
    ]  # fmt: skip
    assert payload["meta"]["command"] == "python -m benchmarks --quick"
    md = (tmp_path / "results.md").read_text()
    assert "| fast one | ours | theirs | 1.00 | 4.00 | **4.00** | 3% | met (>= 2) |  |" in md
    assert "| slow one | ours | bare | 10.00 | 5.00 | **0.50** | 1% | MISSED (>= 0.7) |  |" in md
    png = (tmp_path / "speed.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


GENERATORS = ["python", pytest.param("wrk", marks=pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"))]  # fmt: skip


@pytest.mark.parametrize("generator", GENERATORS)
def test_over_http_loads_a_real_server_and_reads_its_cpu(
    generator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the over-HTTP pair's machinery against a real uvicorn serving the protected app: a
    # short load counts requests, reads the server's CPU time, and a wrong key (every
    # answer a 401) is reported, not measured
    monkeypatch.setattr(over_http, "generator", lambda: generator)
    env, secret = over_http.prepare(tmp_path)
    server = over_http.Server(over_http._uvicorn("starlette_protected"), env)
    try:
        measured = over_http.load(server, [f"Authorization: Bearer {secret}"], 1.0)
        with pytest.raises(RuntimeError, match="non-200"):
            over_http.load(server, ["Authorization: Bearer sk_live_nope"], 1.0)
    finally:
        server.stop()
    assert measured.requests > 10
    assert measured.non_200 == 0
    assert measured.rps > 0
    assert measured.p99_ms > 0
    assert measured.cpu_us is not None
    assert measured.cpu_us > 0


def test_over_http_alone_runs_the_pair_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    # python -m benchmarks.over_http: the served pairs without the rest, as many rounds as
    # asked; one pair's rows only (Flask: two servers, the shorter run)
    assert over_http.main(["--pair", "flask", "--rounds", "2", "--seconds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Flask over HTTP (gunicorn gthread), server CPU/request" in printed
    assert "Starlette" not in printed


@pytest.mark.parametrize("argv", [["--rounds", "1"], ["--seconds", "0.5"], ["--pair", "x"]])
def test_over_http_alone_refuses_a_run_too_short_to_mean_anything(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        over_http.main(argv)
    assert exc.value.code == 2


def test_over_http_serves_another_build_beside_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # --against: keysentry served from another source tree in the same rounds, with a
    # served-target row of its own. The copy marks each process that imports it, so the row
    # is known to measure the copy, not this checkout again.
    copy = tmp_path / "other" / "src"
    shutil.copytree(over_http.ROOT / "src" / "keysentry", copy / "keysentry",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))  # fmt: skip
    marks = tmp_path / "marks"
    marks.mkdir()
    with (copy / "keysentry" / "__init__.py").open("a") as init:
        init.write("\nimport os as _os\n"
                   "if 'KEYSENTRY_TEST_MARKS' in _os.environ:\n"
                   "    open(_os.path.join(_os.environ['KEYSENTRY_TEST_MARKS'], str(_os.getpid())),"
                   " 'w').close()\n")  # fmt: skip
    monkeypatch.setenv("KEYSENTRY_TEST_MARKS", str(marks))
    argv = ["--pair", "starlette", "--rounds", "2", "--seconds", "1",
            "--against", str(tmp_path / "other")]  # fmt: skip
    assert over_http.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"keysentry from {copy}, extra CPU/request" in printed
    assert printed.count("keysentry's extra is") == 2  # this build's row and the copy's
    # the import check and the server that served it: two processes, each its own mark
    assert len(list(marks.iterdir())) == 2


@pytest.mark.parametrize("argv", [
    ["--pair", "flask", "--against", "."],  # the Flask pair has no floor to compare with
    ["--against", "/nonexistent"],
    ["--against", "benchmarks"],  # a directory without keysentry
    ["--against", ".", "--against", ".", "--against", ".", "--against", "."],
])  # fmt: skip
def test_over_http_refuses_an_other_build_it_cannot_serve(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        over_http.main(argv)
    assert exc.value.code == 2


def test_an_other_build_that_fails_to_import_is_refused_with_its_error(tmp_path: Path) -> None:
    # a tree whose keysentry cannot be imported: refused before any server starts, naming
    # the import's own error rather than a server's start-up failure later
    (tmp_path / "keysentry").mkdir()
    (tmp_path / "keysentry" / "__init__.py").write_text("raise ImportError('half-written')\n")
    failed = r"importing keysentry from .* failed: ImportError: half-written"
    with pytest.raises(ValueError, match=failed):
        over_http.source_tree(tmp_path)


def test_the_floor_does_the_work_it_is_measured_for() -> None:
    # benchmarks/floor.py is the yardstick for the middleware: it must really check the key
    # and the permission, count the request and send the headers, or its ratio means nothing
    from benchmarks.asgi import _app
    from benchmarks.floor import FloorMiddleware, floor_keys
    from starlette.testclient import TestClient

    from keysentry import RateLimitRule
    from keysentry.core.keys import generate_key
    from keysentry.core.ratelimit import compile_limits

    secret = generate_key("sk_live").secret
    app = _app()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    app.add_middleware(FloorMiddleware, keys=floor_keys(digest, 2),
                       required={"/users/": "users:read"})  # fmt: skip
    client = TestClient(app)
    first = client.get("/users/1", headers={"Authorization": f"Bearer {secret}"})
    assert first.status_code == 200
    # the same header bytes keysentry sends for the same rule
    rule = compile_limits([RateLimitRule(unit="minute", max_requests=2)])[0]
    assert first.headers["ratelimit-policy"] == rule.policy_item == '"2/minute:per_key";q=2;w=60'
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert first.headers["ratelimit"].startswith(f"{rule.header_name};r=1;t=")
    assert client.get("/users/1", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    bad = [
        secret[:-1] + ("A" if secret[-1] != "A" else "B"),  # checksum
        generate_key("sk_live").secret,  # unknown
    ]
    for key in [*bad, secret]:  # and the third request with the good key: over the limit
        with pytest.raises(RuntimeError):
            client.get("/users/1", headers={"Authorization": f"Bearer {key}"})


def _answer(response: Any) -> tuple[int, Any, dict[str, str]]:
    """A response's status, body (or refusal reason) and the rate-limit headers that do not
    name the second (which two runs may straddle)."""
    body = response.json()
    named = ("ratelimit-policy", "x-ratelimit-limit", "x-ratelimit-remaining")
    headers = {name: value for name, value in response.headers.items() if name in named}
    if response.status_code != 200:
        body = body["errors"][0]["reason"]
    return response.status_code, body, headers


def _inlined(client: Any) -> Any:
    """The ``InlinedMiddleware`` in a test client's app (built by its first request)."""
    from benchmarks.inlined import InlinedMiddleware

    layer = client.app.middleware_stack
    while not isinstance(layer, InlinedMiddleware):
        layer = layer.app
    return layer


def test_the_inlined_path_answers_what_keysentry_answers_and_takes_its_own_way() -> None:
    # benchmarks/inlined.py reads keysentry's private attributes: if they move, it must
    # fail here, not quietly hand every request to KeySentryMiddleware and measure that
    from benchmarks.asgi import _app
    from benchmarks.inlined import InlinedMiddleware
    from benchmarks.world import bench_key
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from keysentry import KeySentry
    from keysentry.asgi import KeySentryMiddleware

    async def who(request: Request) -> JSONResponse:
        identity = request.state.api_key  # key_id: the one of the loop's KeySentry
        return JSONResponse({"key": identity.key_id == key_id,
                             "user": request.user.identity == key_id,
                             "scopes": list(request.auth.scopes),
                             "remaining": [o.remaining for o in identity.rate_limits]})  # fmt: skip

    answers = {}
    for middleware in (KeySentryMiddleware, InlinedMiddleware):
        with KeySentry("memory://", usage_interval=None) as ks:
            secret = bench_key(ks)
            key_id = ks.list_api_keys("bench")[0].id
            ks.update_rate_limit_scheme("bench", rules=[{"unit": "minute", "max_requests": 3}])
            app = _app()
            app.router.routes.append(Route("/users/{user_id}/who", who))
            app.add_middleware(middleware, sentry=ks, permissions={"GET /users/*": ["users:read"]})
            client = TestClient(app)
            auth = {"Authorization": f"Bearer {secret}"}
            responses = [client.get("/users/42/who", headers=auth) for _ in range(4)]
            usage = [(p.outcome, p.count) for p in ks.get_usage(key_id=key_id, granularity="day")]
            answers[middleware] = [_answer(r) for r in responses], usage
            if middleware is InlinedMiddleware:
                # the first request fills the cache and the remembered verdict by
                # KeySentryMiddleware; the next two count in this function; the fourth,
                # refused, is KeySentryMiddleware's again
                assert _inlined(client).taken == 2
    ours, theirs = answers[KeySentryMiddleware], answers[InlinedMiddleware]
    assert [a[0] for a in ours[0]] == [200, 200, 200, 429]
    assert [a[1]["remaining"] for a in ours[0][:3]] == [[2], [1], [0]]
    assert ours[0][0][1]["key"]
    assert ours[0][0][1]["user"]
    assert sorted(ours[1]) == [("ok", 3), ("rate_limited", 1)]
    assert ours == theirs


def test_the_counted_fastapi_apps_answer_200() -> None:
    # each runner sends one request when built and raises unless it was answered 200; in a
    # child process, as benchmarks.instructions runs it (its event loops live until exit)
    code = "from benchmarks.instructions import _serve\n" + "".join(
        f"_serve({variant!r})(3)\n" for variant in ("fastapi-bare", "fastapi")
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.skipif(instructions.missing() is not None, reason=str(instructions.missing()))
def test_instructions_are_counted_per_request() -> None:
    counts = instructions.per_request(["bare"], requests=20)
    assert 10_000 < counts["bare"] < 10_000_000  # a Starlette request is about 85,000
    with pytest.raises(RuntimeError, match="callgrind failed for nothing"):
        instructions.count("nothing", 1)


@pytest.mark.skipif(instructions.missing() is not None, reason=str(instructions.missing()))
def test_served_instructions_are_counted_in_the_serving_thread() -> None:
    # uvicorn under callgrind, counting only while it answers the counted requests: a served
    # request's cost in the serving thread (about 193,000 for bare Starlette), and nothing in
    # the other threads, which a bare app does not have. Counting start-up too and subtracting
    # a run without requests left the start-up's noise (tens of millions on a busy machine).
    from benchmarks import served_instructions

    counts = served_instructions.per_request(("bare",), requests=20)
    serving, other = counts["bare"]
    assert 100_000 < serving < 1_000_000
    assert abs(other) < 1_000


@pytest.mark.skipif(instructions.missing() is not None, reason=str(instructions.missing()))
def test_served_requests_are_simulated_in_the_caches_and_branch_predictor() -> None:
    # --simulate: callgrind's cache and branch model beside the instructions. A served request
    # misses in L1 and mispredicts branches, each far more rarely than it runs an instruction
    from benchmarks import served_instructions

    counts = served_instructions.simulated(("bare",), requests=20)["bare"]
    assert 100_000 < counts["instructions"] < 1_000_000
    assert 100 < counts["L1 misses"] < counts["instructions"] / 5
    assert 100 < counts["mispredicted branches"] < counts["instructions"] / 5


def test_a_served_measure_is_compared_by_what_each_adds_to_the_bare_app() -> None:
    from benchmarks.served_instructions import extra_ratio

    counts = {"bare": {"L1 misses": 100.0}, "floor": {"L1 misses": 150.0},
              "keysentry": {"L1 misses": 170.0}}  # fmt: skip
    assert extra_ratio(counts, "keysentry", "L1 misses") == pytest.approx(70 / 50)


def _served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: str) -> tuple[Any, str]:
    """A test client of the over-HTTP app made by *factory*, set up as the servers are (the
    benchmark's database and key's digest in the environment), and the key."""
    from benchmarks import http_apps
    from starlette.testclient import TestClient

    env, secret = over_http.prepare(tmp_path)
    for name in ("KEYSENTRY_BENCH_DB", "KEYSENTRY_BENCH_DIGEST"):
        monkeypatch.setenv(name, env[name])
    return TestClient(getattr(http_apps, factory)()), secret


def test_the_served_floor_knows_the_benchmark_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the over-HTTP floor is given the key's digest, not the key: the same key must pass it
    client, secret = _served(tmp_path, monkeypatch, "starlette_floor")
    answer = client.get("/users/7", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200
    assert answer.headers["x-ratelimit-limit"] == str(HUGE)


def test_the_served_inlined_path_decides_the_benchmark_requests_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # benchmarks.served_instructions counts it served: it must take its own path there too
    client, secret = _served(tmp_path, monkeypatch, "starlette_inlined")
    answers = [client.get("/users/7", headers={"Authorization": f"Bearer {secret}"})
               for _ in range(3)]  # fmt: skip
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[-1].headers["x-ratelimit-limit"] == str(HUGE)
    assert _inlined(client).taken == 2  # the first request fills the cache


def test_the_served_target_compares_each_servers_median() -> None:
    # each server's CPU per request is its median over the rounds, so one slow load moves
    # neither extra; a second floor process is the run's control, read beside the ratio
    def loads(*cpu: float) -> list[over_http.Load]:
        return [over_http.Load(1000, 1.0, 1.0, 0, us) for us in cpu]

    bare = loads(40.0, 41.0, 60.0, 40.5, 41.5)  # the third load ran 20 us slow
    ours = loads(52.0, 80.0, 53.0, 52.5, 53.5)  # the second too
    floor = loads(51.0, 50.0, 70.0, 50.5, 51.5)
    control = loads(50.5, 52.0, 51.0, 51.0, 49.0)
    row = over_http.extra_cpu(Result, "uvicorn", bare, ours, floor, control)
    assert (row.ours_us, row.baseline_us) == (12.0, 10.0)
    assert row.speed == pytest.approx(10 / 12)
    assert row.met is True  # 1.2x the floor's extra is within 1.3x
    assert "1.20x the floor's" in row.detail
    assert "the floor in a second process: 1.00x" in row.detail
    found = re.search(r"90% interval ([\d.]+)x-([\d.]+)x", row.detail)
    assert found is not None
    low, high = float(found.group(1)), float(found.group(2))
    assert 0 < low <= 1.2 <= high  # wide: two of five loads are outliers
    assert row.interval == pytest.approx((1 / high, 1 / low), rel=0.01)
    # the verdict says whether the interval reaches past the target
    assert run._verdict(row).endswith("within this run's noise") == (1 / high < row.target)
    steady = over_http.extra_cpu(Result, "uvicorn", loads(*[40.0] * 5), loads(*[52.0] * 5),
                                 loads(*[50.0] * 5))  # fmt: skip
    assert "90% interval 1.20x-1.20x" in steady.detail
    assert run._verdict(steady) == "met (>= 0.769)"  # no interval reaches 1.3x
    slower = over_http.extra_cpu(Result, "uvicorn", bare, loads(54, 55, 74, 54.5, 55.5), floor)
    assert slower.met is False  # 1.4x
    assert "second process" not in slower.detail  # no control, no reading
    assert over_http.extra_cpu(Result, "uvicorn", bare, ours, [*floor[:4],
                               over_http.Load(1000, 1.0, 1.0, 0, None)]) is None  # fmt: skip
    # a run whose bare server measured no cheaper than a middleware compares nothing
    assert over_http.extra_cpu(Result, "uvicorn", bare, ours, bare) is None
