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
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keysentry import KeySentry
from keysentry.core.decision import Decision, Identity
from keysentry.core.pipeline import LookupKey, Policy, RequestFacts, admitted, path_problem
from tests.verification.generated import (
    PATH,
    WAITS,
    World,
    last_uses,
    runs,
    same_usage,
    secret_of,
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


# each request's credential, then (path, policy, wait)
REQUESTS = runs(st.tuples(PATH, POLICY, st.sampled_from(WAITS)), max_size=12)


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
    return [(("key", name), ("/users/1", Policy(("users:read",)), wait)) for wait in waits]


@pytest.mark.parametrize(
    "decide",
    [by_middleware, by_verify, by_facts, by_averify, by_async_facts],
    ids=["middleware", "verify", "facts", "averify", "async-facts"],
)
@settings(max_examples=120)
@given(run=REQUESTS)
@example(run=_by("expiring", 13.0, 13.0))  # cached before its expiry, asked after
@example(run=_by("old", 29.0, 29.0, 7.0))  # an old secret cached in its grace, asked after
@example(run=_by("plain", 36.0, 7.0, 29.0))  # counted in one minute, then in the next
@example(run=_by("limited", 0.0, 7.0, 0.5))  # admitted with its outcome, then refused
# a cached key on a path with a dot segment, which the general path refuses unread
@example(run=[*_by("plain", 0.0), (("key", "plain"), ("/users/./1", Policy(("users:read",)), 0.0))])
def test_the_one_step_path_answers_and_counts_as_the_general_path(
    decide: Callable[[KeySentry, str, str, Policy], Decision], run: list[tuple[Any, ...]]
) -> None:
    world = World()
    try:
        for drawn, (route, wanted, wait) in run:
            world.clock.advance(wait)
            secret = secret_of(world, drawn)
            fast = decide(world.quick, secret, route, wanted)
            slow = by_general_path(world.general, secret, route, wanted)
            assert answer(fast) == answer(slow), (secret, route, wanted)
        # the same usage: one instance's counts written, then the other's on top of them
        doubled, both = same_usage(world)
        assert doubled == both
        # every request by a key, on a path that is not refused unread, is its app's (one
        # with no key, or a key of another prefix, is no app's)
        by_key = sum(d[0] == "key" and not path_problem(r) for d, (r, *_) in run)
        assert sum(doubled.values()) >= 2 * by_key
        assert last_uses(world.general) == last_uses(world.quick)
    finally:
        world.close()
