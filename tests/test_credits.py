"""Credits: a key that may make N more requests, refilled daily or monthly; spent atomically
with the rate limits (a rate-limited request spends nothing, a request out of credits counts
against no rate limit), never overspent by threads or processes, kept in the store."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from keysentry import KeySentry, ValidationError
from keysentry.limiters import Limiter
from keysentry.testing import FakeClock

T0 = datetime(2027, 3, 14, 15, 0, tzinfo=UTC).timestamp()


def _ks(url: str = "memory://", **options: Any) -> KeySentry:
    options.setdefault("clock", FakeClock(T0))
    ks = KeySentry(url, usage_interval=None, **options)
    ks.create_rate_limit_scheme(slug="three", name="Three", rules=[
        {"unit": "minute", "max_requests": 3}])  # fmt: skip
    ks.create_api_auth_app("shop", "Shop", "sk_shop")
    return ks


def test_a_key_spends_its_credits_then_gets_429(database_url: str) -> None:
    with _ks(database_url) as ks:
        issued = ks.create_api_key("shop", "metered", credits=5)
        assert issued.key.credits == 5
        first = ks.verify(issued.secret)
        assert first.allowed
        assert first.identity is not None
        assert first.identity.credits_remaining == 4
        assert ("x-credits-remaining", "4") in first.headers
        assert [ks.verify(issued.secret).allowed for _ in range(5)] == [True] * 4 + [False]
        out = ks.verify(issued.secret)
        assert (out.reason, out.status) == ("usage_exceeded", 429)
        assert not any(name == "retry-after" for name, _ in out.headers)  # no refill coming
        assert ks.verify(issued.secret, cost=0).allowed  # verifies without spending
        unlimited = ks.create_api_key("shop", "free")
        plain = ks.verify(unlimited.secret)
        assert plain.identity is not None
        assert plain.identity.credits_remaining is None
        assert plain.headers == ()


def test_costs_and_their_checks() -> None:
    with _ks() as ks:
        secret = ks.create_api_key("shop", "k", credits=10).secret
        assert [ks.verify(secret, cost=4).allowed for _ in range(3)] == [True, True, False]
        assert ks.verify(secret, cost=2).allowed  # the 2 left
        for bad in (-1, 1.5, True, "1", 10**16):
            with pytest.raises(ValidationError) as caught:
                ks.verify(secret, cost=bad)  # type: ignore[arg-type]
            assert caught.value.errors[0].field == "cost"


def test_rate_limits_and_credits_are_one_decision(limiter: Limiter) -> None:
    clock = FakeClock(T0)
    with _ks(limiter=limiter, clock=clock) as ks:
        issued = ks.create_api_key("shop", "k", credits=5, rate_limit_scheme_slug="three")
        # three a minute: the fourth is rate limited and spends nothing
        verdicts = [ks.verify(issued.secret) for _ in range(4)]
        assert [v.allowed for v in verdicts] == [True, True, True, False]
        assert verdicts[3].reason == "rate_limited"
        assert verdicts[3].identity is not None
        assert verdicts[3].identity.credits_remaining == 2
        clock.now += 120  # the sliding window forgets the first minute
        assert [ks.verify(issued.secret).allowed for _ in range(2)] == [True, True]  # credits 0
        out = ks.verify(issued.secret)
        assert out.reason == "usage_exceeded"
        # that refusal counted against no rule: another key of the same scheme is unaffected,
        # and this key's minute shows 2 used, not 3
        assert ks.update_credits(issued.key.id, set=1).credits == 1
        again = ks.verify(issued.secret)
        assert again.allowed
        assert again.rate_limits[0].remaining == 0  # 3 counted: 2 before, this one


def test_daily_refill_sets_the_balance(database_url: str) -> None:
    clock = FakeClock(T0)
    with _ks(database_url, clock=clock) as ks:
        issued = ks.create_api_key("shop", "daily", credits=2,
                                   refill={"interval": "daily", "amount": 3})  # fmt: skip
        assert [ks.verify(issued.secret).allowed for _ in range(3)] == [True, True, False]
        out = ks.verify(issued.secret)
        midnight = datetime(2027, 3, 15, tzinfo=UTC).timestamp()
        assert dict(out.headers)["retry-after"] == str(int(midnight - T0))
        clock.now = midnight
        # set to 3, not 3 more: four requests, three admitted
        assert [ks.verify(issued.secret).allowed for _ in range(4)] == [True] * 3 + [False]


def test_monthly_refill_on_its_day() -> None:
    clock = FakeClock(T0)  # 14 March
    with _ks(clock=clock) as ks:
        issued = ks.create_api_key(
            "shop", "monthly", refill={"interval": "monthly", "amount": 2, "refill_day": 20}
        )
        assert issued.key.credits == 2  # the amount, until the first refill
        assert [ks.verify(issued.secret).allowed for _ in range(3)] == [True, True, False]
        clock.now = datetime(2027, 3, 19, 23, 59, tzinfo=UTC).timestamp()
        assert not ks.verify(issued.secret).allowed
        clock.now = datetime(2027, 3, 20, tzinfo=UTC).timestamp()
        assert [ks.verify(issued.secret).allowed for _ in range(3)] == [True, True, False]


def test_updates_reach_a_running_worker(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/credits.db"
    clock = FakeClock(T0)
    with _ks(url, clock=clock, sync_interval=0.0) as worker, KeySentry(url) as admin:
        issued = worker.create_api_key("shop", "k", credits=1)
        assert worker.verify(issued.secret).allowed
        assert not worker.verify(issued.secret).allowed
        assert admin.update_credits(issued.key.id, increment=2).credits == 2
        assert [worker.verify(issued.secret).allowed for _ in range(3)] == [True, True, False]
        admin.update_credits(issued.key.id, set=5)
        assert sum(worker.verify(issued.secret).allowed for _ in range(7)) == 5
        admin.update_credits(issued.key.id, set=10)
        admin.update_credits(issued.key.id, decrement=4)
        assert sum(worker.verify(issued.secret).allowed for _ in range(12)) == 6
        kinds = [e.kind for e in admin.list_events() if e.key_id == issued.key.id]
        assert kinds.count("key.credits_updated") == 4


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"credits": -1}, "credits"),
        ({"credits": 1.5}, "credits"),
        ({"credits": "10"}, "credits"),
        ({"credits": True}, "credits"),
        ({"refill": {"amount": 10}}, "refill.interval"),
        ({"refill": {"interval": "weekly", "amount": 10}}, "refill.interval"),
        ({"refill": {"interval": "monthly", "amount": 0}}, "refill.amount"),
        ({"refill": {"interval": "monthly", "amount": 5, "refill_day": 29}}, "refill.refill_day"),
        ({"refill": {"interval": "monthly", "amount": 5, "refill_day": 0}}, "refill.refill_day"),
        ({"refill": {"interval": "daily", "amount": 5, "refill_day": 3}}, "refill.refill_day"),
    ],
)
def test_bad_credits_are_field_errors(kwargs: dict[str, Any], field: str) -> None:
    with _ks() as ks:
        with pytest.raises(ValidationError) as caught:
            ks.create_api_key("shop", "k", **kwargs)
        assert [e.field for e in caught.value.errors] == [field]
        assert ks.list_api_keys("shop") == []


def test_bad_updates_are_field_errors() -> None:
    with _ks() as ks:
        limited = ks.create_api_key("shop", "k", credits=3).key.id
        free = ks.create_api_key("shop", "free").key.id
        for kwargs, field in (({}, "set"), ({"set": 1, "increment": 1}, "set"),
                              ({"set": -1}, "set"), ({"increment": 1.5}, "increment"),
                              ({"decrement": True}, "decrement")):  # fmt: skip
            with pytest.raises(ValidationError) as caught:
                ks.update_credits(limited, **kwargs)
            assert caught.value.errors[0].field == field
        with pytest.raises(ValidationError) as caught:
            ks.update_credits(free, increment=5)
        assert "use set" in caught.value.errors[0].message
        assert ks.get_api_key(limited).credits == 3
        assert ks.update_credits(free, set=7).credits == 7  # a limit from now on


def test_threads_never_overspend(database_url: str) -> None:
    with _ks(database_url, clock=FakeClock(T0)) as ks:
        secret = ks.create_api_key("shop", "k", credits=500).secret
        with ThreadPoolExecutor(16) as pool:
            verdicts = list(pool.map(lambda _: ks.verify(secret).allowed, range(800)))
        assert sum(verdicts) == 500


def test_unspent_leases_go_back_to_the_store(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/credits.db"
    with _ks(url) as ks:
        issued = ks.create_api_key("shop", "k", credits=500)
        assert ks.verify(issued.secret).allowed  # leases 50, spends 1
        assert ks.get_api_key(issued.key.id).credits == 450
    with KeySentry(url) as again:
        assert again.get_api_key(issued.key.id).credits == 499


def test_the_middlewares_charge_by_route_and_send_the_balance() -> None:
    from contextlib import contextmanager

    from flask import Flask
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from keysentry.asgi import KeySentryMiddleware
    from keysentry.wsgi import KeySentryWSGIMiddleware
    from tests.adapters.support import asgi_caller, wsgi_caller

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"left": request.state.api_key.credits_remaining})

    costs = {"POST /v1/generate": 10, "GET /v1/free": 0}
    with _ks() as ks:
        asgi_app = Starlette(routes=[Route("/v1/generate", ok, methods=["POST"]),
                                     Route("/v1/free", ok), Route("/v1/one", ok)],
                             middleware=[Middleware(KeySentryMiddleware, sentry=ks,
                                                    costs=costs)])  # fmt: skip
        flask = Flask(__name__)
        for rule, methods in (("/v1/generate", ["POST"]), ("/v1/free", ["GET"]),
                              ("/v1/one", ["GET"])):  # fmt: skip
            flask.add_url_rule(rule, rule, lambda: {"ok": True}, methods=methods)
        flask.wsgi_app = KeySentryWSGIMiddleware(flask.wsgi_app, sentry=ks,  # type: ignore[method-assign]
                                                 costs=costs)  # fmt: skip
        with contextmanager(asgi_caller)(asgi_app) as asgi:
            for call in (asgi, wsgi_caller(flask)):
                auth = {
                    "Authorization": f"Bearer {ks.create_api_key('shop', 'k', credits=25).secret}"
                }
                assert call("POST", "/v1/generate", auth).headers["x-credits-remaining"] == "15"
                assert call("GET", "/v1/free", auth).headers["x-credits-remaining"] == "15"
                assert call("GET", "/v1/one", auth).headers["x-credits-remaining"] == "14"
                assert call("POST", "/v1/generate", auth).status == 200  # 4 left
                out = call("POST", "/v1/generate", auth)
                assert out.status == 429
                assert out.body["errors"][0]["reason"] == "usage_exceeded"
                assert call("GET", "/v1/one", auth).status == 200  # the 4 are still there
    from keysentry import ConfigurationError

    for bad in ({"POST /x": -1}, {"POST /x": 1.5}, {"BAD ROUTE PATTERN x": 1}, ["POST /x"]):
        with pytest.raises(ConfigurationError):
            KeySentryMiddleware(asgi_app, sentry=ks, costs=bad)  # type: ignore[arg-type]


def test_require_charges_its_cost() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    with _ks() as ks:

        @ks.require(cost=5)
        async def generate(request: Request) -> JSONResponse:
            return JSONResponse({"ok": True})

        client = TestClient(Starlette(routes=[Route("/", generate)]))
        auth = {"Authorization": f"Bearer {ks.create_api_key('shop', 'k', credits=12).secret}"}
        statuses = [client.get("/", headers=auth).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]


def test_the_admin_api_and_the_cli_manage_credits(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from starlette.testclient import TestClient

    from keysentry.admin import create_admin_app, create_admin_key
    from keysentry.cli import main

    url = f"sqlite:///{tmp_path}/credits.db"
    with _ks(url) as ks:
        admin = create_admin_key(ks).secret
        client = TestClient(create_admin_app(ks), headers={"Authorization": f"Bearer {admin}"})
        made = client.post("/api-auth/apps/shop/keys", json={
            "name": "metered", "credits": 100,
            "refill": {"interval": "monthly", "amount": 1000, "refill_day": 1}})  # fmt: skip
        assert made.status_code == 201, made.text
        key_id = made.json()["key"]["id"]
        assert made.json()["key"]["credits"] == 100
        bad = client.post("/api-auth/apps/shop/keys", json={"name": "x", "credits": -3})
        assert (bad.status_code, bad.json()["errors"][0]["field"]) == (422, "credits")
        bad = client.post("/api-auth/apps/shop/keys",
                          json={"name": "x", "refill": {"interval": "monthly", "amount": 5,
                                                        "refill_day": 31}})  # fmt: skip
        assert bad.json()["errors"][0]["field"] == "refill.refill_day"
        changed = client.post("/api-auth/keys/credits", json={"api_key_id": key_id, "increment": 5})
        assert changed.json()["credits"] == 105
        two = client.post("/api-auth/keys/credits", json={"api_key_id": key_id, "set": 1,
                                                          "increment": 1})  # fmt: skip
        assert two.status_code == 422
        assert "/api-auth/keys/credits" in client.get("/api-auth/openapi.json").json()["paths"]
    assert main(["--database-url", url, "keys", "credits", key_id, "--set", "7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["credits"] == 7
    assert main(["--database-url", url, "keys", "credits", key_id, "--decrement", "-1"]) != 0
    assert "decrement" in capsys.readouterr().err
    assert main(["--database-url", url, "keys", "create", "shop", "--name", "d",
                 "--refill-daily", "50", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["key"]["credits"] == 50


@pytest.mark.redis
def test_on_redis_a_credited_request_is_still_one_round_trip(tmp_path: Any) -> None:
    import redis

    from keysentry.limiters.redis import RedisLimiter
    from tests.own_services import OwnRedis

    own = OwnRedis(tmp_path / "redis")  # ours alone: its command counts are this test's
    own.start()
    shared = RedisLimiter(own.url, timeout=10, on_error="closed")
    server = redis.Redis.from_url(own.url)

    def script_calls() -> int:
        stats = server.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))

    try:
        with _ks(limiter=shared) as ks:
            secret = ks.create_api_key("shop", "k", credits=10_000,
                                       rate_limit_scheme_slug="three").secret  # fmt: skip
            ks.verify(secret)  # the first lease and the script's load
            before = script_calls()
            assert [ks.verify(secret).allowed for _ in range(2)] == [True, True]
            refused = ks.verify(secret)  # rate limited: still one call, and the credit back
            assert refused.reason == "rate_limited"
            assert refused.identity is not None
            assert refused.identity.credits_remaining == 10_000 - 3
            assert script_calls() - before == 3
    finally:
        shared.close()
        server.close()
        own.stop_if_running()


@pytest.mark.parametrize("costs", [[10], [10, 7, 3], [999, 1], [3, 1000, 1]])
def test_every_credit_can_be_spent_whatever_the_costs(database_url: str, costs: list[int]) -> None:
    with _ks(database_url) as ks:
        secret = ks.create_api_key("shop", "k", credits=1000).secret
        spent, attempt = 0, 0
        while True:
            cost = costs[attempt % len(costs)]
            attempt += 1
            if ks.verify(secret, cost=cost).allowed:
                spent += cost
            elif not ks.verify(secret, cost=1).allowed:  # nothing left at all
                break
            else:
                spent += 1
        assert spent == 1000  # no leftover of a lease stranded below the next cost


def test_the_async_driver_spends_alike(limiter: Limiter) -> None:
    import asyncio

    with _ks(limiter=limiter) as ks:
        issued = ks.create_api_key("shop", "k", credits=4, rate_limit_scheme_slug="three")

        async def run() -> list[Any]:
            try:
                return [await ks.averify(issued.secret) for _ in range(5)]
            finally:
                await ks.limiter.aclose()

        verdicts = asyncio.run(run())
        assert [v.reason for v in verdicts] == ["ok"] * 3 + ["rate_limited"] * 2
        assert verdicts[-1].identity.credits_remaining == 1  # the refused ones gave back
        assert ks.verify(issued.secret, cost=0).identity.credits_remaining == 1
