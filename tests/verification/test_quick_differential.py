"""The one-step path against the general one, by generated requests: two KeySentry
instances share one store, each with its own cache, limiter and usage counts. One decides
every request as an adapter does (``Verifier.quick`` first, the general path where it
defers: the ASGI middleware, ``ks.verify`` and ``ks.averify``, and the WSGI middleware and
``ks.require`` on prepared facts, sync and async); the other by the sync general path alone,
so the async driver is held to the sync one too. Whatever the key (plain, rate-limited,
shared by its owner, expiring, rotated in its grace period, refused by its allowlist, mangled,
or no key at all), path, policy and time, the two must answer alike, count alike and record
the same usage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keysentry import KeySentry, RateLimitRule
from keysentry.core.decision import Decision, Identity
from keysentry.core.pipeline import LookupKey, Policy, RequestFacts, admitted, path_problem
from keysentry.stores.memory import MemoryKeyStore
from keysentry.testing import FakeClock

START = 1_800_000_000.0  # a fixed start: every example begins in the same minute
_ALL = datetime.fromtimestamp(START - 60, UTC)


class World:
    """The shared store, the two instances over it, and the keys' secrets."""

    def __init__(self) -> None:
        self.clock = FakeClock(START)
        store = MemoryKeyStore()
        # a cache entry lives five minutes: long enough for a key cached before it expires
        # (or before its old secret's grace ends) to be asked after
        options: dict[str, Any] = {"cache_ttl": 300.0, "clock": self.clock, "usage_interval": None,
                                   "sync_interval": None}  # fmt: skip
        self.quick = KeySentry(store=store, **options)
        self.general = KeySentry(store=store, **options)
        ks = self.quick
        two = [RateLimitRule(unit="minute", max_requests=2)]
        ks.create_rate_limit_scheme("two", "Two a minute", rules=two)
        ks.create_rate_limit_scheme("owner", "Three an hour, shared by the owner", rules=[
            {"unit": "hour", "max_requests": 3, "mode": "per_owner"},
            {"unit": "minute", "max_requests": 2, "mode": "per_key_and_endpoint"},
        ])  # fmt: skip
        ks.create_api_auth_app("api", "API", "sk_test", permissions=["users:*", "orders:read"],
                               resources=["users/*", "orders/1"])  # fmt: skip
        expires = datetime.fromtimestamp(START + 20, UTC)
        rotated = ks.create_api_key("api", "rotated", permissions=["users:read"])
        self.secrets = {
            "plain": ks.create_api_key("api", "plain", permissions=["users:read"]).secret,
            "inherits": ks.create_api_key("api", "inherits").secret,
            "limited": ks.create_api_key("api", "limited", permissions=["users:*"],
                                         rate_limit_scheme_slug="two").secret,
            "owner-1": ks.create_api_key("api", "o1", rate_limit_scheme_slug="owner",
                                         owner_user_id="u1").secret,
            "owner-2": ks.create_api_key("api", "o2", rate_limit_scheme_slug="owner",
                                         owner_user_id="u1").secret,
            "expiring": ks.create_api_key("api", "expiring", expires_at=expires).secret,
            "allowlist": ks.create_api_key("api", "ips", allowed_ips=["10.0.0.0/8"]).secret,
            "old": rotated.secret,
            "new": ks.rotate_api_key(rotated.key.id, grace_seconds=60).secret,
        }  # fmt: skip

    def close(self) -> None:
        self.quick.close()
        self.general.close()


def mangled(secret: str, position: int, replacement: str) -> str:
    index = position % len(secret)
    return secret[:index] + replacement + secret[index + 1 :]


NAMES = ["plain", "inherits", "limited", "owner-1", "owner-2", "expiring", "allowlist", "old",
         "new"]  # fmt: skip
ODD = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=80)
SEGMENTS = ["users", "orders", "1", "7", "", ".", "..", "%2e", "users.json", "é", "\x00", "a b"]
# the waits: within a cache entry's TTL (30 s), across it, into the next minute and hour
WAITS = [0.0, 0.5, 7.0, 13.0, 29.0, 61.0, 3600.0]


def credential(cast: list[str]) -> st.SearchStrategy[tuple[Any, ...]]:
    """Mostly the keys of this example's *cast*, as they are (what the one-step path
    answers); then mangled, with a suffix, or any bytes (where it must defer)."""
    key = st.tuples(st.just("key"), st.sampled_from(cast))
    return st.one_of(
        key,
        key,
        key,
        key,
        key,
        st.tuples(st.just("mangled"), st.sampled_from(cast), st.integers(0, 70),
                  st.sampled_from(["A", "z", "0", "_", " ", "\x00", "é"])),
        st.tuples(st.just("suffixed"), st.sampled_from(cast), st.sampled_from(["x", " ", "_"])),
        st.tuples(st.just("odd"), ODD),
    )  # fmt: skip


PATH = st.one_of(
    st.just("/users/1"),
    st.just("/users/1"),
    st.sampled_from(["/users/1", "/users/7", "/orders/1"]),
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)),
)
POLICY = st.one_of(
    st.just(Policy(("users:read",))),
    st.sampled_from([Policy(("users:read",)), Policy(())]),
    st.builds(
        Policy,
        st.lists(st.sampled_from(["users:read", "users:write", "orders:read", "admin"]),
                 max_size=2, unique=True).map(tuple),
        st.one_of(st.none(), st.sampled_from(["users/1", "orders/1", "orders/2"])),
    ),
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """A run of requests by one or two of the keys: (credential, path, policy, wait)."""
    cast = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True))
    one = st.tuples(credential(cast), PATH, POLICY, st.sampled_from(WAITS))
    return draw(st.lists(one, min_size=1, max_size=12))


def secret_of(world: World, drawn: tuple[Any, ...]) -> str:
    kind = drawn[0]
    if kind == "key":
        return world.secrets[drawn[1]]
    if kind == "mangled":
        return mangled(world.secrets[drawn[1]], drawn[2], drawn[3])
    if kind == "suffixed":
        return world.secrets[drawn[1]] + str(drawn[2])
    return str(drawn[1])


def by_middleware(ks: KeySentry, credential: str, path: str, policy: Policy) -> Decision:
    """What ``KeySentryMiddleware`` does on a route it has seen: the bearer token's bytes to
    the one-step path, the general path for whatever it does not decide."""
    facts = RequestFacts("GET", path, (f"Bearer {credential}",), (), "127.0.0.1")
    found: Identity | Decision | LookupKey | None = None
    if path.startswith("/"):
        found = ks.verifier.quick(credential.encode("latin-1"), path, policy)
    if type(found) is Identity:
        return admitted(found)
    if type(found) is Decision:
        return found
    assert found is None or type(found) is LookupKey
    return ks.verifier.verify_request_general(facts, policy, found)


def by_verify(ks: KeySentry, credential: str, path: str, policy: Policy) -> Decision:
    """``ks.verify``, which tries the one-step path first too."""
    return ks.verify(f"Bearer {credential}", method="GET", path=path, client_ip="127.0.0.1",
                     permissions=policy.permissions, resource=policy.resource)  # fmt: skip


def by_facts(ks: KeySentry, credential: str, path: str, policy: Policy) -> Decision:
    """``Verifier.verify_request`` on prepared facts (the WSGI middleware, ``ks.require``),
    which takes the one-step path first as well."""
    facts = RequestFacts("GET", path, (f"Bearer {credential}",), (), "127.0.0.1")
    return ks.verifier.verify_request(facts, policy)


def by_averify(ks: KeySentry, credential: str, path: str, policy: Policy) -> Decision:
    """``ks.averify``: the one-step path, then the async driver (store reads in a thread)."""
    return _loop().run(ks.averify(f"Bearer {credential}", method="GET", path=path,
                                  client_ip="127.0.0.1", permissions=policy.permissions,
                                  resource=policy.resource))  # fmt: skip


def by_async_facts(ks: KeySentry, credential: str, path: str, policy: Policy) -> Decision:
    """``Verifier.averify_request`` on prepared facts (the async guards)."""
    facts = RequestFacts("GET", path, (f"Bearer {credential}",), (), "127.0.0.1")
    return _loop().run(ks.verifier.averify_request(facts, policy))


_runner: list[asyncio.Runner] = []


def _loop() -> asyncio.Runner:
    """One event loop for the module's async callers (closed by :func:`_close_loop`)."""
    if not _runner:
        _runner.append(asyncio.Runner())
    return _runner[0]


@pytest.fixture(scope="module", autouse=True)
def _close_loop() -> Iterator[None]:
    yield
    while _runner:
        _runner.pop().close()


def by_general_path(ks: KeySentry, credential: str, path: str, policy: Policy) -> Decision:
    facts = RequestFacts("GET", path, (f"Bearer {credential}",), (), "127.0.0.1")
    return ks.verifier.verify_request_general(facts, policy)


def answer(decision: Decision) -> tuple[Any, ...]:
    return (decision.allowed, decision.reason, decision.status, decision.body,
            decision.headers, decision.rate_limits, decision.identity)  # fmt: skip


def _by(name: str, *waits: float) -> list[tuple[Any, ...]]:
    """Requests by one key for ``/users/1`` with ``users:read``, after each of *waits*."""
    return [(("key", name), "/users/1", Policy(("users:read",)), wait) for wait in waits]


@pytest.mark.parametrize(
    "decide",
    [by_middleware, by_verify, by_facts, by_averify, by_async_facts],
    ids=["middleware", "verify", "facts", "averify", "async-facts"],
)
@settings(max_examples=120)
@given(run=requests())
@example(run=_by("expiring", 13.0, 13.0))  # cached before its expiry, asked after
@example(run=_by("old", 29.0, 29.0, 7.0))  # an old secret cached in its grace, asked after
@example(run=_by("plain", 36.0, 7.0, 29.0))  # counted in one minute, then in the next
@example(run=_by("limited", 0.0, 7.0, 0.5))  # admitted with its outcome, then refused
# a cached key on a path with a dot segment, which the general path refuses unread
@example(run=[*_by("plain", 0.0), (("key", "plain"), "/users/./1", Policy(("users:read",)), 0.0)])
def test_the_one_step_path_answers_and_counts_as_the_general_path(
    decide: Callable[[KeySentry, str, str, Policy], Decision], run: list[tuple[Any, ...]]
) -> None:
    world = World()
    try:
        for drawn, route, wanted, wait in run:
            world.clock.advance(wait)
            secret = secret_of(world, drawn)
            fast = decide(world.quick, secret, route, wanted)
            slow = by_general_path(world.general, secret, route, wanted)
            assert answer(fast) == answer(slow), (secret, route, wanted)
        # the same usage: one instance's counts written, then the other's on top of them
        world.quick.usage.flush()
        once = world.quick.get_usage("api", since=_ALL, granularity="minute")
        world.general.usage.flush()
        twice = world.quick.get_usage("api", since=_ALL, granularity="minute")
        assert {(p.start, p.outcome): 2 * p.count for p in once} == {
            (p.start, p.outcome): p.count for p in twice
        }
        # every request by a key, on a path that is not refused unread, is its app's (one
        # with no key, or a key of another prefix, is no app's)
        by_key = sum(d[0] == "key" and not path_problem(r) for d, r, *_ in run)
        assert sum(p.count for p in once) >= by_key
        # and the same last use of every key
        used = {k.id: k.last_used_at for k in world.general.list_api_keys("api")}
        assert used == {k.id: k.last_used_at for k in world.quick.list_api_keys("api")}
    finally:
        world.close()
