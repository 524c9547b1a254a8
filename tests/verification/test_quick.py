"""The one-step path (``Verifier.quick``) against the general one: where it answers, it
answers what the pipeline would; everywhere else it defers (``None``), and the general path
decides. Then the adapter's side, as an attacker would probe it: odd bytes, two keys, long
keys, preflights and mounted apps on routes the middleware has already seen."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from keysentry import KeySentry, RateLimitRule
from keysentry.asgi import KeySentryMiddleware
from keysentry.core.decision import Decision, Identity
from keysentry.core.pipeline import LookupKey, Policy, RequestFacts, admitted
from keysentry.models import CreditRefill
from keysentry.testing import FakeClock
from keysentry.verification.arguments import bearer, request_facts, request_policy

READ = Policy(("users:read",))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ks(clock: FakeClock) -> Iterator[KeySentry]:
    sentry = KeySentry("memory://", clock=clock, usage_interval=None, sync_interval=None)
    sentry.create_rate_limit_scheme(
        "two", "Two a minute", rules=[RateLimitRule(unit="minute", max_requests=2)]
    )
    sentry.create_api_auth_app("api", "API", "sk_test", permissions=["users:*"],
                               resources=["users/*"], allowed_ips=None)  # fmt: skip
    yield sentry
    sentry.close()


def facts(secret: str, path: str = "/users/1") -> RequestFacts:
    return RequestFacts("GET", path, (f"Bearer {secret}",), (), "127.0.0.1")


def quick(ks: KeySentry, secret: str, path: str = "/users/1", policy: Policy = READ) -> Any:
    found = ks.verifier.quick(secret.encode(), path, policy)
    return admitted(found) if type(found) is Identity else found


def general(ks: KeySentry, secret: str, path: str = "/users/1", policy: Policy = READ) -> Any:
    return ks.verifier.verify_request_general(facts(secret, path), policy)


@pytest.mark.parametrize(
    ("permissions", "path", "policy", "reason"),
    [
        pytest.param(["users:read"], "/users/1", READ, "ok", id="allowed"),
        pytest.param(["users:write"], "/users/1", READ, "permission_denied", id="permission"),
        pytest.param(["users:read"], "/orders/1", READ, "resource_denied", id="resource"),
        pytest.param(["users:read"], "/x", Policy((), "users/7"), "ok", id="given-resource"),
    ],
)
def test_a_cached_plain_key_is_decided_as_the_general_path_decides(
    ks: KeySentry, permissions: list[str], path: str, policy: Policy, reason: str
) -> None:
    secret = ks.create_api_key("api", "k", permissions=permissions).secret
    assert quick(ks, secret, path, policy) is None  # not cached yet: the general path loads it
    slow = general(ks, secret, path, policy)
    fast = quick(ks, secret, path, policy)
    assert fast is not None
    assert (fast.allowed, fast.reason, fast.status, fast.body, fast.fixed_headers) == (
        slow.allowed, slow.reason, slow.status, slow.body, slow.fixed_headers)  # fmt: skip
    assert fast.reason == reason
    assert fast.identity == slow.identity


@pytest.mark.parametrize("decide", [quick, general], ids=["quick", "general"])
def test_a_verdict_remembered_for_a_path_is_not_served_for_a_named_resource(
    ks: KeySentry, decide: Any
) -> None:
    # the memo keeps "the path as resource" apart from a resource asked for by name
    secret = ks.create_api_key("api", "k", permissions=["users:read"]).secret
    general(ks, secret)  # cached: quick answers from here on
    named = Policy(("users:read",), "orders/1")
    for _ in range(2):  # the second round is answered from the memo
        assert decide(ks, secret, "/users/1").reason == "ok"
        assert decide(ks, secret, "/users/1", named).reason == "resource_denied"
        assert decide(ks, secret, "/orders/1").reason == "resource_denied"
        assert decide(ks, secret, "/orders/1", Policy(("users:read",), "users/1")).reason == "ok"


def test_the_rate_limit_counts_on_both_paths_alike(ks: KeySentry) -> None:
    secret = ks.create_api_key("api", "k", permissions=["users:read"],
                               rate_limit_scheme_slug="two").secret  # fmt: skip
    first = general(ks, secret)
    second = quick(ks, secret)
    third = quick(ks, secret)
    assert [first.allowed, second.allowed, third.allowed] == [True, True, False]
    assert (third.reason, third.status) == ("rate_limited", 429)
    assert [d.rate_limits[0].remaining for d in (first, second)] == [1, 0]
    assert second.identity.rate_limits == second.rate_limits  # this request's own outcome
    assert dict(third.headers)["retry-after"] == dict(general(ks, secret).headers)["retry-after"]


def test_an_admitted_request_is_answered_as_its_identity_carrying_the_outcomes(
    ks: KeySentry,
) -> None:
    secret = ks.create_api_key("api", "k", permissions=["users:read"],
                               rate_limit_scheme_slug="two").secret  # fmt: skip
    first = general(ks, secret)
    second = ks.verifier.quick(secret.encode(), "/users/1", READ)
    assert type(second) is Identity
    assert second.key_id == first.identity.key_id
    assert [o.remaining for o in second.rate_limits] == [0]  # this request's own outcome
    verdict = admitted(second)
    assert (verdict.allowed, verdict.reason, verdict.identity) == (True, "ok", second)
    assert verdict.rate_limits == second.rate_limits
    assert dict(verdict.headers)["x-ratelimit-remaining"] == "0"
    refused = ks.verifier.quick(secret.encode(), "/users/1", READ)
    assert type(refused) is Decision
    assert refused.status == 429


def _expire(ks: KeySentry, clock: FakeClock) -> str:
    expires = datetime.fromtimestamp(clock.now + 10, UTC)
    secret = ks.create_api_key("api", "k", expires_at=expires).secret
    general(ks, secret)
    clock.advance(11)  # within the cache's TTL: the entry is still there
    return secret


def _revoke(ks: KeySentry, clock: FakeClock) -> str:
    issued = ks.create_api_key("api", "k")
    ks.revoke_api_key(issued.key.id)
    general(ks, issued.secret)  # the refusal is cached
    return issued.secret


def _old_secret(ks: KeySentry, clock: FakeClock) -> str:
    issued = ks.create_api_key("api", "k")
    ks.rotate_api_key(issued.key.id, grace_seconds=600)
    general(ks, issued.secret)
    return issued.secret


def _with(**fields: Any) -> Any:
    def make(ks: KeySentry, clock: FakeClock) -> str:
        secret = ks.create_api_key("api", "k", **fields).secret
        general(ks, secret)
        return secret

    return make


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(_expire, "key_expired", id="expired"),
        pytest.param(_revoke, "key_revoked", id="revoked"),
        pytest.param(_old_secret, "ok", id="old-secret-in-grace"),
        pytest.param(_with(credits=5), "ok", id="credits"),
        pytest.param(_with(refill=CreditRefill(interval="daily", amount=3)), "ok", id="refill"),
        pytest.param(_with(allowed_ips=["127.0.0.0/8"]), "ok", id="allowlist"),
    ],
)
def test_any_other_key_is_left_to_the_general_path(
    ks: KeySentry, clock: FakeClock, make: Any, reason: str
) -> None:
    secret = make(ks, clock)
    found = quick(ks, secret, policy=Policy())
    assert type(found) is LookupKey  # found in the cache: the general path goes on from there
    assert found.digest == sha256(secret.encode()).hexdigest()
    assert found.prefix == "sk_test"
    resumed = ks.verifier.verify_request_general(facts(secret), Policy(), found)
    assert resumed.reason == reason
    assert general(ks, secret, policy=Policy()).reason == reason


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(RateLimitRule(unit="minute", max_requests=5, mode="per_key_and_ip")),
        pytest.param(RateLimitRule(unit="minute", max_requests=5, endpoints=["POST /users/*"])),
    ],
)
def test_counters_that_depend_on_the_request_take_the_general_path(
    ks: KeySentry, rule: RateLimitRule
) -> None:
    ks.create_rate_limit_scheme("varying", "Varying", rules=[rule])
    secret = ks.create_api_key("api", "k", rate_limit_scheme_slug="varying").secret
    assert general(ks, secret).allowed
    assert type(quick(ks, secret)) is LookupKey


@pytest.mark.parametrize("path", ["/users/../admin", "/users//1", "/users/./1"])
def test_paths_with_dot_or_empty_segments_are_left_to_the_general_path(
    ks: KeySentry, path: str
) -> None:
    secret = ks.create_api_key("api", "k").secret
    general(ks, secret)
    assert quick(ks, secret, path) is None
    assert general(ks, secret, path).reason == "invalid_path"


def test_a_credential_longer_than_any_key_is_not_even_hashed(ks: KeySentry) -> None:
    secret = ks.create_api_key("api", "k").secret
    general(ks, secret)
    assert quick(ks, secret + "A" * 10_000) is None
    assert general(ks, secret + "A" * 10_000).reason == "invalid_key"


def test_a_due_event_log_read_sends_the_request_to_the_general_path(
    tmp_path: Path, clock: FakeClock
) -> None:
    # another process revokes: once sync_interval has passed, the one-step path must not
    # serve the cached entry before the log was read
    url = f"sqlite:///{tmp_path / 'ks.db'}"
    with KeySentry(url, clock=clock, usage_interval=None) as worker, KeySentry(url) as admin:
        admin.create_api_auth_app("api", "API", "sk_test")
        issued = admin.create_api_key("api", "k")
        assert general(worker, issued.secret, policy=Policy()).allowed
        assert quick(worker, issued.secret, policy=Policy()) is not None
        admin.revoke_api_key(issued.key.id)
        clock.advance(1.5)
        assert quick(worker, issued.secret, policy=Policy()) is None  # not "found": log due
        assert worker.verify(issued.secret).reason == "key_revoked"


def test_the_one_step_path_counts_usage_and_last_use(ks: KeySentry, clock: FakeClock) -> None:
    issued = ks.create_api_key("api", "k", permissions=["users:read"])
    general(ks, issued.secret)
    assert quick(ks, issued.secret) is not None
    ks.usage.flush()
    points = ks.get_usage(key_id=issued.key.id, since=timedelta(hours=1))
    assert sum(point.count for point in points) == 2  # one by the general path, one quick
    assert ks.get_api_key(issued.key.id).last_used_at is not None


# ------------------------------------------------------------------ the ASGI side
async def _whoami(request: Request) -> JSONResponse:
    key = getattr(request.state, "api_key", None)
    if key is None:  # a preflight: no key
        return JSONResponse({"key": None})
    return JSONResponse({"key": key.key_id, "left": [o.remaining for o in key.rate_limits]})


@pytest.fixture
def client(ks: KeySentry) -> Iterator[TestClient]:
    app = Starlette(routes=[Route("/users/{n}", _whoami, methods=["GET", "OPTIONS"])])
    app.add_middleware(KeySentryMiddleware, sentry=ks,
                       permissions={"GET /users/*": ["users:read"]})  # fmt: skip
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def secret(ks: KeySentry, client: TestClient) -> str:
    issued = ks.create_api_key("api", "k", permissions=["users:read"],
                               rate_limit_scheme_slug="two")  # fmt: skip
    first = client.get("/users/1", headers={"Authorization": f"Bearer {issued.secret}"})
    assert first.status_code == 200  # the route is seen and the key cached from here on
    return issued.secret


def test_a_seen_route_and_a_cached_key_answer_with_the_identity_and_headers(
    client: TestClient, secret: str
) -> None:
    reply = client.get("/users/1", headers={"Authorization": f"Bearer {secret}"})
    assert reply.status_code == 200
    assert reply.json()["left"] == [0]
    assert reply.headers["x-ratelimit-remaining"] == "0"
    refused = client.get("/users/1", headers={"Authorization": f"Bearer {secret}"})
    assert (refused.status_code, refused.json()["errors"][0]["reason"]) == (429, "rate_limited")
    assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe" + b"A" * 40,  # latin-1 bytes that are not ASCII
        b"Bearer \x00",
        b"Bearer " + b"\xc3\xa9" * 30,
        b"Bearer " + b"A" * 70_000,
        b"Bearer ",
        b"Bearer",
    ],
    ids=["latin-1", "nul", "utf-8", "70-kB", "empty", "no-space"],
)
def test_odd_bytes_on_a_seen_route_are_401_never_5xx(
    client: TestClient, secret: str, value: bytes
) -> None:
    reply = client.get("/users/1", headers=[(b"authorization", value)])
    assert reply.status_code == 401
    assert reply.json()["errors"][0]["reason"] in ("invalid_key", "missing_key")


def test_two_keys_on_a_seen_route_are_refused_even_when_one_is_cached(
    client: TestClient, secret: str
) -> None:
    for pair in ([secret, secret], [secret, "sk_test_other"], ["sk_test_other", secret]):
        headers = [(b"authorization", f"Bearer {value}".encode()) for value in pair]
        reply = client.get("/users/1", headers=headers)
        assert (reply.status_code, reply.json()["errors"][0]["reason"]) == (401, "invalid_key")


def test_a_preflight_on_a_seen_options_route_still_passes_without_a_key(
    ks: KeySentry, client: TestClient, secret: str
) -> None:
    keyed = client.options("/users/1", headers={"Authorization": f"Bearer {secret}"})
    assert keyed.status_code == 200  # OPTIONS /users/1 is now a route the middleware has seen
    # a preflight passes without being verified, even carrying that key, now out of quota
    preflight = client.options("/users/1", headers={
        "Origin": "https://example.com", "Access-Control-Request-Method": "GET",
        "Authorization": f"Bearer {secret}"})  # fmt: skip
    assert (preflight.status_code, preflight.json()) == (200, {"key": None})


def test_request_user_is_one_per_key_and_follows_a_changed_key(ks: KeySentry) -> None:
    async def whoami(request: Request) -> JSONResponse:
        user = request.user
        return JSONResponse({"user": id(user), "name": user.display_name,
                             "scopes": list(request.auth.scopes),
                             "user_outcomes": len(user.api_key.rate_limits),
                             "own_outcomes": len(request.state.api_key.rate_limits)})  # fmt: skip

    app = Starlette(routes=[Route("/users/{n}", whoami)])
    app.add_middleware(KeySentryMiddleware, sentry=ks)
    ks.update_rate_limit_scheme("two", rules=[RateLimitRule(unit="minute", max_requests=9)])
    ks.create_api_key("api", "other", rate_limit_scheme_slug="two")
    issued = ks.create_api_key("api", "k", rate_limit_scheme_slug="two")  # inherits users:*
    headers = {"Authorization": f"Bearer {issued.secret}"}
    with TestClient(app) as test_client:
        first, second = (test_client.get("/users/1", headers=headers).json() for _ in "12")
        assert first["user"] == second["user"]  # shared by the key's requests
        assert (second["name"], second["scopes"]) == ("k", ["users:*"])
        # the request's own outcomes are on request.state.api_key, not on the shared user
        assert (second["user_outcomes"], second["own_outcomes"]) == (0, 1)
        ks.update_api_auth_app("api", permissions=["users:*", "orders:*"])
        changed = test_client.get("/users/1", headers=headers).json()
        assert changed["user"] != first["user"]
        assert changed["scopes"] == ["users:*", "orders:*"]


def test_a_mounted_app_is_checked_on_the_path_inside_its_mount(ks: KeySentry) -> None:
    # under a root_path the resource is the path inside the mount (users/1, which the app's
    # users/* grants), on the first request and on every one after it
    inner = Starlette(routes=[Route("/users/{n}", _whoami)])
    inner.add_middleware(KeySentryMiddleware, sentry=ks,
                         permissions={"GET /users/*": ["users:read"]})  # fmt: skip
    app = Starlette(routes=[Mount("/api", inner)])
    reader = ks.create_api_key("api", "k", permissions=["users:read"]).secret
    writer = ks.create_api_key("api", "w", permissions=["users:write"]).secret
    with TestClient(app) as test_client:
        # inside the mount this is /api/users/1: a (method, path) the middleware then knows
        test_client.get("/api/api/users/1", headers={"Authorization": f"Bearer {reader}"})
        for _ in range(3):
            ok = test_client.get("/api/users/1", headers={"Authorization": f"Bearer {reader}"})
            assert ok.status_code == 200
            no = test_client.get("/api/users/1", headers={"Authorization": f"Bearer {writer}"})
            refused = (no.status_code, no.json()["errors"][0]["reason"])
            assert refused == (403, "permission_denied")


def test_on_redis_a_key_with_counters_is_counted_by_the_general_path(
    clock: FakeClock, limiter: Any
) -> None:
    # counting on Redis is I/O the drivers await: quick hands such a key over (hashed once),
    # and decides a key with no counters itself, whichever the limiter
    with KeySentry("memory://", clock=clock, usage_interval=None, sync_interval=None,
                   limiter=limiter) as ks:  # fmt: skip
        ks.create_rate_limit_scheme(
            "two", "Two a minute", rules=[RateLimitRule(unit="minute", max_requests=2)]
        )
        ks.create_api_auth_app("api", "API", "sk_test")
        counted = ks.create_api_key("api", "c", rate_limit_scheme_slug="two").secret
        free = ks.create_api_key("api", "f").secret
        for secret in (counted, free):
            assert general(ks, secret, policy=Policy()).allowed
        found = quick(ks, counted, policy=Policy())
        if limiter.remote:
            assert type(found) is LookupKey
            found = ks.verifier.verify_request_general(facts(counted), Policy(), found)
        assert (found.allowed, found.rate_limits[0].remaining) == (True, 0)
        assert ks.verify(counted).reason == "rate_limited"  # two counted, on either limiter
        decided = quick(ks, free, policy=Policy())
        assert (decided.allowed, decided.rate_limits) == (True, ())


@pytest.mark.parametrize(
    ("value", "presented"),
    [("Bearer sk_a_b", b"sk_a_b"), ("sk_a_b", b"sk_a_b"), ("Basic c2s6", None),
     ("Bearer  sk_a_b", b" sk_a_b"), ("sk_\xe9", None), ("bearer", b"bearer")],
)  # fmt: skip
def test_what_the_drivers_hand_to_the_one_step_path(value: str, presented: bytes | None) -> None:
    # bytes that match no cached key (" sk_a_b", "bearer") send the request on to the
    # general path, which decides as it always did
    assert bearer(request_facts(value, "GET", "/", None, None)) == presented


def test_a_bare_key_is_decided_in_one_step_as_a_bearer_one(ks: KeySentry) -> None:
    ks.create_rate_limit_scheme("ten", "Ten", rules=[{"unit": "minute", "max_requests": 10}])
    secret = ks.create_api_key("api", "k", permissions=["users:read"],
                               rate_limit_scheme_slug="ten").secret  # fmt: skip
    verdicts = [ks.verify(value, path="/users/1", permissions="users:read")
                for value in (secret, secret, f"Bearer {secret}")]  # fmt: skip
    # the first loaded the cache; the bytes ks.verify hands over now decide in one step
    assert type(quick(ks, secret)) is Decision
    assert [v.identity.rate_limits[0].remaining for v in verdicts] == [9, 8, 7]
    assert [v.reason for v in verdicts] == ["ok"] * 3
    assert verdicts[1].identity.key_id == verdicts[2].identity.key_id
    refused = ks.verify(secret, path="/users/1", permissions="users:write")
    assert (refused.status, refused.reason) == (403, "permission_denied")


def verify_by(caller: str, ks: KeySentry, *args: Any, **kwargs: Any) -> Any:
    """``ks.verify`` or, run on an event loop of its own, ``ks.averify``."""
    if caller == "verify":
        return ks.verify(*args, **kwargs)
    return asyncio.run(ks.averify(*args, **kwargs))


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        pytest.param({}, "ok", id="usual"),
        pytest.param({"method": "get", "path": "users/1"}, "ok", id="lower-case-relative"),
        pytest.param({"method": "G T"}, "invalid_method", id="not-a-token"),
        pytest.param({"path": "/users/../admin"}, "invalid_path", id="dot-segment"),
        pytest.param({"permissions": "users:write"}, "permission_denied", id="permission"),
        pytest.param({"resource": "orders/1"}, "resource_denied", id="resource"),
        pytest.param({"api_key": "sk_test_other"}, "invalid_key", id="two-keys"),
        pytest.param({"cost": 0}, "ok", id="no-cost"),
    ],
)
@pytest.mark.parametrize("caller", ["verify", "averify"])
def test_ks_verify_decides_as_the_general_path_does(
    ks: KeySentry, arguments: dict[str, Any], reason: str, caller: str
) -> None:
    # ks.verify tries the one-step path before it builds any RequestFacts; what it answers
    # must be what the pipeline answers from the facts
    secret = ks.create_api_key("api", "k", permissions=["users:read"]).secret
    call = {"path": "/users/1", "permissions": "users:read", **arguments}
    general(ks, secret)  # cached: the one-step path can answer from here on
    for _ in range(2):
        verdict = verify_by(caller, ks, f"Bearer {secret}", **call)
        assert verdict.reason == reason
    facts = request_facts(f"Bearer {secret}", call.get("method", "GET"), call["path"],
                          call.get("api_key"), None)  # fmt: skip
    policy = request_policy(call["permissions"], call.get("resource"), call.get("cost", 1))
    assert ks.verifier.verify_request_general(facts, policy).reason == reason


@pytest.mark.parametrize("caller", ["verify", "averify"])
def test_ks_verify_goes_on_from_a_key_the_one_step_path_found(ks: KeySentry, caller: str) -> None:
    # a key with credits is found in the cache by the one-step path and spent by the general
    issued = ks.create_api_key("api", "k", permissions=["users:read"], credits=3)
    for left in (2, 1, 0):
        verdict = verify_by(caller, ks, issued.secret, path="/users/1")
        assert verdict.allowed
        assert verdict.identity.credits_remaining == left
    begun = ks.verifier.begin_call(issued.secret, "GET", "/users/1", (), None, None, None, 1)
    assert type(begun) is tuple
    assert type(begun[2]) is LookupKey  # found in the cache; the general path spends
    assert ks.verify(issued.secret, path="/users/1").reason == "usage_exceeded"


def _guarded_apps(ks: KeySentry) -> dict[str, Any]:
    from fastapi import Depends, FastAPI

    async def whoami(request: Request) -> JSONResponse:
        key = request.state.api_key
        return JSONResponse({"key": key.key_id, "left": [o.remaining for o in key.rate_limits]})

    require = ks.require("users:read", resource="users/{n}")(whoami)
    starlette = Starlette(routes=[Route("/users/{n}", require)])
    fastapi = FastAPI()

    @fastapi.get("/users/{n}")
    async def depends(
        n: str,
        key: Any = Depends(ks.depends("users:read", resource="users/{n}")),  # noqa: B008
    ) -> dict[str, Any]:
        return {"key": key.key_id, "left": [o.remaining for o in key.rate_limits]}

    return {"require": starlette, "depends": fastapi}


@pytest.mark.parametrize("adapter", ["require", "depends"])
def test_guards_decide_a_cached_key_in_one_step_as_the_general_path_does(
    ks: KeySentry, adapter: str
) -> None:
    # ks.require and ks.depends take the one-step path once the key is cached: every answer
    # must be the one the general path gave, the odd and hostile ones too
    issued = ks.create_api_key("api", "k", permissions=["users:read"],
                               rate_limit_scheme_slug="two")  # fmt: skip
    other = ks.create_api_key("api", "o", permissions=["users:write"]).secret
    auth = {"Authorization": f"Bearer {issued.secret}"}
    with TestClient(_guarded_apps(ks)[adapter]) as client:
        first = client.get("/users/1", headers=auth)  # the general path; cached from here
        assert (first.status_code, first.json()) == (200, {"key": issued.key.id, "left": [1]})
        assert first.headers["x-ratelimit-remaining"] == "1"
        client.get("/users/1", headers={"Authorization": f"Bearer {other}"})  # cached too
        for _ in range(2):  # the second round: both keys' verdicts remembered
            denied = client.get("/users/1", headers={"Authorization": f"Bearer {other}"})
            assert denied.status_code == 403
            two = client.get(
                "/users/1",
                headers=[
                    ("authorization", f"Bearer {issued.secret}"),
                    ("authorization", f"Bearer {other}"),
                ],
            )
            assert two.status_code == 401
            odd = client.get("/users/1", headers=[(b"authorization", b"Bearer \xff\x00")])
            assert odd.status_code == 401
            dots = client.get("/users/..%2Fadmin", headers=auth)
            assert dots.status_code in (400, 404)  # refused, never served
        second = client.get("/users/1", headers=auth)  # one step: counted as the first was
        assert (second.status_code, second.json()["left"]) == (200, [0])
        third = client.get("/users/1", headers=auth)
        assert third.status_code == 429
        assert int(third.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({"credential": 123}, "credential", id="credential-int"),
        pytest.param({"credential": b"Bearer sk_test_x"}, "credential", id="credential-bytes"),
        pytest.param({"method": None}, "method", id="method-none"),
        pytest.param({"path": b"/users/1"}, "path", id="path-bytes"),
        pytest.param({"permissions": None}, "permissions", id="permissions-none"),
        pytest.param({"permissions": ["users:read", 7]}, "permissions", id="permission-int"),
        pytest.param({"resource": 5}, "resource", id="resource-int"),
        pytest.param({"api_key": b"sk_test_x"}, "api_key", id="api-key-bytes"),
        pytest.param({"client_ip": ("127.0.0.1",)}, "client_ip", id="client-ip-tuple"),
        pytest.param({"cost": "1"}, "cost", id="cost-text"),
    ],
)
@pytest.mark.parametrize("caller", ["verify", "averify"])
def test_ks_verify_names_an_argument_of_the_wrong_type(
    ks: KeySentry, arguments: dict[str, Any], field: str, caller: str
) -> None:
    from keysentry.errors import ValidationError

    secret = ks.create_api_key("api", "k", permissions=["users:read"]).secret
    ks.verify(secret, path="/users/1")  # cached: the one-step path would answer
    call = {"credential": secret, "path": "/users/1", **arguments}
    with pytest.raises(ValidationError) as info:
        verify_by(caller, ks, **call)
    assert info.value.fields == [field]


def test_a_policy_named_by_one_permission_string_is_built_once_and_the_memo_is_bounded() -> None:
    from keysentry.errors import ValidationError
    from keysentry.verification import arguments

    arguments._POLICIES.clear()  # whatever this process's other tests asked for
    first = request_policy("memo:read", None, 1)
    assert first == Policy(("memo:read",), None, 1)
    assert request_policy("memo:read", None, 1) is first  # remembered
    assert request_policy("memo:read", "users/7", 1) == Policy(("memo:read",), "users/7", 1)
    assert request_policy("memo:read", None, 0).cost == 0  # the cost is part of the key
    assert request_policy(["memo:read"], None, 1) == first  # a list is built each time
    with pytest.raises(ValidationError):
        request_policy("memo:read", None, -1)  # refused, and never remembered
    assert ("memo:read", None, -1) not in arguments._POLICIES
    for n in range(arguments._MAX_POLICIES + 10):  # a program that invents permissions
        request_policy(f"memo:{n}", None, 1)
    assert len(arguments._POLICIES) == arguments._MAX_POLICIES
    assert request_policy("memo:never-seen", None, 1) == Policy(("memo:never-seen",), None, 1)
