"""Rate limits through the whole stack: the management API's schemes, the middlewares, and
each limiter (in-process, and Redis on the fake clock)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import http_sfv
import pytest

from keysentry import KeySentry
from keysentry.asgi import KeySentryMiddleware
from keysentry.limiters import Limiter
from keysentry.testing import FakeClock
from tests.adapters.support import (
    Call,
    asgi_caller,
    fastapi_decorated,
    flask_app,
    flask_decorated,
    starlette_app,
    starlette_decorated,
    wsgi_caller,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_040.0)  # a whole minute: 1_700_000_040 % 60 == 0


@pytest.fixture
def ks(clock: FakeClock, limiter: Limiter) -> KeySentry:
    sentry = KeySentry("memory://", clock=clock, limiter=limiter)
    sentry.create_rate_limit_scheme("two-rules", "Two rules", [
        {"unit": "minute", "max_requests": 3, "mode": "per_key", "endpoints": ["GET /users/*"]},
        {"unit": "minute", "max_requests": 2, "mode": "per_key", "endpoints": ["/orders/*"]},
    ])  # fmt: skip
    sentry.create_api_auth_app(
        app_slug="internal-api", name="Internal API", key_prefix="sk_live",
        permissions=["users:*", "orders:*"], resources=["users/*", "orders/*"],
        rate_limit_scheme_slug="two-rules",
    )  # fmt: skip
    return sentry


@pytest.fixture(params=["asgi", "wsgi", "starlette-require", "flask-require", "fastapi-depends"])
def call(request: pytest.FixtureRequest, ks: KeySentry) -> Iterator[Call]:
    if request.param == "wsgi":
        yield wsgi_caller(flask_app(ks))
    elif request.param == "flask-require":
        yield wsgi_caller(flask_decorated(ks))
    elif request.param == "starlette-require":
        yield from asgi_caller(closing_at_shutdown(starlette_decorated(ks), ks))
    elif request.param == "fastapi-depends":  # GET /users/* through ks.depends
        yield from asgi_caller(closing_at_shutdown(fastapi_decorated(ks), ks))
    else:
        yield from asgi_caller(starlette_app(ks))


def closing_at_shutdown(app: Any, ks: KeySentry) -> Any:
    """What the README asks of an app without the middleware: ``await ks.aclose()`` (here
    only the limiter's part: the store outlives the app) when the app shuts down."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def send_closing(message: Any) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await ks.limiter.aclose()
            await send(message)

        await app(scope, receive, send_closing if scope["type"] == "lifespan" else send)

    return wrapped


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_429_exactly_at_the_limit_per_endpoint_rule(call: Call, ks: KeySentry) -> None:
    secret = ks.create_api_key("internal-api", "k", permissions=["users:read"]).secret
    users = [call("GET", "/users/1", bearer(secret)).status for _ in range(4)]
    assert users == [200, 200, 200, 429]
    orders = [call("GET", "/orders/1", bearer(secret)).status for _ in range(3)]
    assert orders == [200, 200, 429]  # its own counter: /users did not use it up


def test_headers_parse_as_structured_fields(call: Call, ks: KeySentry) -> None:
    secret = ks.create_api_key("internal-api", "k", permissions=["users:read"]).secret
    ok = call("GET", "/users/1", bearer(secret))
    policy = http_sfv.List()
    policy.parse(ok.headers["ratelimit-policy"].encode())
    name, params = policy[0].value, dict(policy[0].params)
    assert (name, params) == ("3/minute:per_key@GET /users/*", {"q": 3, "w": 60})
    current = http_sfv.List()
    current.parse(ok.headers["ratelimit"].encode())
    assert current[0].value == name
    assert dict(current[0].params) == {"r": 2, "t": 60}
    assert (ok.headers["x-ratelimit-limit"], ok.headers["x-ratelimit-remaining"]) == ("3", "2")
    for _ in range(2):
        call("GET", "/users/1", bearer(secret))
    refused = call("GET", "/users/1", bearer(secret))
    assert refused.status == 429
    assert refused.body["errors"][0]["reason"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining"] == "0"


def test_a_lone_client_that_waits_retry_after_is_admitted(
    call: Call, ks: KeySentry, clock: FakeClock
) -> None:
    secret = ks.create_api_key("internal-api", "k", permissions=["users:read"]).secret
    for _ in range(3):
        assert call("GET", "/users/1", bearer(secret)).status == 200
    clock.advance(30)
    refused = call("GET", "/users/1", bearer(secret))
    assert refused.status == 429
    wait = int(refused.headers["retry-after"])
    clock.advance(wait - 1)
    assert call("GET", "/users/1", bearer(secret)).status == 429  # not a second early...
    clock.advance(1)
    assert call("GET", "/users/1", bearer(secret)).status == 200  # ...admitted on time


def test_keys_without_rules_get_no_rate_headers(call: Call, ks: KeySentry) -> None:
    ks.create_api_auth_app(app_slug="free", name="Free", key_prefix="sk_free",
                           permissions=["users:*"])  # fmt: skip
    reply = call("GET", "/users/1", bearer(ks.create_api_key("free", "k").secret))
    assert reply.status == 200
    assert "ratelimit" not in reply.headers


def test_a_keys_own_scheme_overrides_its_apps(call: Call, ks: KeySentry) -> None:
    ks.create_rate_limit_scheme("one", "One", [{"unit": "hour", "max_requests": 1}])
    secret = ks.create_api_key("internal-api", "k", rate_limit_scheme_slug="one").secret
    assert [call("GET", "/orders/1", bearer(secret)).status for _ in range(2)] == [200, 429]


def test_64_asyncio_tasks_are_exact(ks: KeySentry) -> None:
    secret = ks.create_api_key("internal-api", "k").secret

    async def main() -> list[bool]:
        calls = [ks.averify(secret, path="/users/1") for _ in range(64)]
        allowed = [v.allowed for v in await asyncio.gather(*calls)]
        await ks.aclose()
        return allowed

    assert sum(asyncio.run(main())) == 3


def test_64_threads_are_exact(ks: KeySentry) -> None:
    secret = ks.create_api_key("internal-api", "k").secret
    barrier = threading.Barrier(64)

    def one() -> bool:
        barrier.wait()
        return ks.verify(secret, path="/users/1").allowed

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(lambda _: one(), range(64)))
    assert sum(results) == 3


def test_ratelimit_state_is_on_the_identity(ks: KeySentry) -> None:
    secret = ks.create_api_key("internal-api", "k").secret
    verdict = ks.verify(secret, path="/users/1")
    [outcome] = verdict.identity.rate_limits  # type: ignore[union-attr]
    assert (outcome.limit.max_requests, outcome.remaining) == (3, 2)
    assert ks.verify(secret, path="/health-free").identity.rate_limits == ()  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_per_ip_rules_trust_x_forwarded_for_only_from_trusted_proxies(
    ks: KeySentry, kind: str
) -> None:
    ks.create_rate_limit_scheme("per-ip", "Per IP", [
        {"unit": "minute", "max_requests": 1, "mode": "per_key_and_ip"},
    ])  # fmt: skip
    secret = ks.create_api_key("internal-api", "k", rate_limit_scheme_slug="per-ip").secret
    options = {"trusted_proxies": ["10.0.0.0/8"]}

    def caller(peer: str) -> Iterator[Call]:
        if kind == "wsgi":
            yield wsgi_caller(flask_app(ks, **options), peer=peer)
        else:
            yield from asgi_caller(starlette_app(ks, **options), peer=peer)

    def status(call: Call, forwarded: str | None = None) -> int:
        headers = bearer(secret) | ({"X-Forwarded-For": forwarded} if forwarded else {})
        return call("GET", "/users/1", headers).status

    for via_proxy in caller("10.1.2.3"):  # a trusted proxy: the client is the last hop
        assert status(via_proxy, "1.1.1.1") == 200
        assert status(via_proxy, "1.1.1.1") == 429
        assert status(via_proxy, "9.9.9.9, 1.1.1.1") == 429  # a forged left part is ignored
        assert status(via_proxy, "2.2.2.2, 10.9.9.9") == 200  # a second trusted hop skipped
        assert status(via_proxy, "2.2.2.2") == 429
    for direct in caller("3.3.3.3"):  # not a proxy: its own address, whatever it claims
        assert status(direct, "4.4.4.4") == 200
        assert status(direct, "5.5.5.5") == 429


def test_trusted_proxies_are_validated() -> None:
    from keysentry.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="trusted_proxies: 'nope'"):
        KeySentryMiddleware(None, sentry=KeySentry("memory://"), trusted_proxies=["nope"])  # type: ignore[arg-type]
