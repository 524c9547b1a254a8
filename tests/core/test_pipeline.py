"""The pipeline driven by hand, step by step: no event loop, no store, no limiter (STYLE.md 20)."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from keysentry.core.decision import Decision, Identity, KeyEntry, Reason
from keysentry.core.keys import generate_key
from keysentry.core.pipeline import (
    UNAVAILABLE,
    Hit,
    LookupKey,
    Policy,
    RequestFacts,
    after_hit,
    after_lookup,
    begin,
    path_problem,
)
from keysentry.core.ratelimit import compile_limits, evaluate
from keysentry.models import RateLimitRule

NOW = 1_700_000_000.0
KEY = generate_key("sk_live")
IDENTITY = Identity(
    key_id="key_1", key_name="k", app_slug="api", permissions=("users:*",),
    resources=("users/*",), metadata=MappingProxyType({}),
)  # fmt: skip
ENTRY = KeyEntry(digest=KEY.digest, identity=IDENTITY)
# the last character changed, whatever it was (a fixed replacement equals it 1 time in 62)
BROKEN = KEY.secret[:-1] + ("1" if KEY.secret.endswith("0") else "0")


def request(path: str = "/users/1", credential: str | None = None) -> RequestFacts:
    auth = () if credential is None else (credential,)
    return RequestFacts(method="GET", path=path, authorization=auth)


ANY = Policy()


def run(facts: RequestFacts, entry: object, policy: Policy = ANY) -> Decision:
    lookup = begin(facts)
    assert lookup == LookupKey(KEY.prefix, KEY.secret, KEY.digest)
    assert KEY.secret not in repr(lookup)  # the secret stays out of logs
    decision = after_lookup(lookup, entry, facts, policy, NOW)  # type: ignore[arg-type]
    assert isinstance(decision, Decision), "no rules: no rate-limit hit asked for"
    return decision


def decided_without_lookup(facts: RequestFacts) -> Decision:
    decision = begin(facts)
    assert isinstance(decision, Decision)
    return decision


def test_valid_key_is_allowed_with_its_identity() -> None:
    decision = run(request(credential=f"Bearer {KEY.secret}"), ENTRY, Policy(("users:read",)))
    assert decision == Decision.allow(IDENTITY)
    assert (decision.status, decision.reason, decision.body) == (200, Reason.OK, b"")


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        pytest.param(request(), Reason.MISSING_KEY, id="missing"),
        pytest.param(request(credential="Bearer sk_live_short"), Reason.INVALID_KEY, id="short"),
        pytest.param(request(credential=BROKEN), Reason.INVALID_KEY, id="checksum"),
        pytest.param(request("/a/../b", KEY.secret), Reason.INVALID_PATH, id="dot-dot"),
        pytest.param(request("//users", KEY.secret), Reason.INVALID_PATH, id="empty-segment"),
    ],
)
def test_refusals_before_any_lookup(facts: RequestFacts, reason: Reason) -> None:
    decision = decided_without_lookup(facts)
    assert decision.reason is reason
    assert decision.identity is None


def test_every_401_without_a_valid_secret_is_the_same_bytes() -> None:
    unknown = run(request(credential=KEY.secret), None)
    malformed = decided_without_lookup(request(credential="Bearer sk_live_nope"))
    wrong = run(request(credential=KEY.secret), None)
    assert unknown == malformed == wrong
    assert dict(unknown.headers)["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    ("changes", "policy", "path", "reason"),
    [
        pytest.param({"revoked": True}, Policy(), "/users/1", Reason.KEY_REVOKED, id="revoked"),
        pytest.param({"expires_at": NOW}, Policy(), "/users/1", Reason.KEY_EXPIRED, id="expired"),
        pytest.param({"active": False}, Policy(), "/users/1", Reason.KEY_DISABLED, id="disabled"),
        pytest.param({"app_active": False}, Policy(), "/users/1", Reason.APP_DISABLED, id="app"),
        pytest.param({}, Policy(("orders:read",)), "/users/1", Reason.PERMISSION_DENIED, id="perm"),
        pytest.param({}, Policy(), "/orders/1", Reason.RESOURCE_DENIED, id="resource"),
        pytest.param({}, Policy(resource="orders/1"), "/users/1", Reason.RESOURCE_DENIED,
                     id="explicit-resource"),
    ],
)  # fmt: skip
def test_403s_carry_the_identity(
    changes: dict[str, object], policy: Policy, path: str, reason: Reason
) -> None:
    entry = KeyEntry(**({"digest": KEY.digest, "identity": IDENTITY} | changes))  # type: ignore[arg-type]
    decision = run(request(path, KEY.secret), entry, policy)
    assert (decision.status, decision.reason) == (403, reason)
    assert decision.identity == IDENTITY
    assert "www-authenticate" not in dict(decision.headers)


def test_unexpired_key_and_resource_template_pass() -> None:
    entry = KeyEntry(digest=KEY.digest, identity=IDENTITY, expires_at=NOW + 1)
    assert run(request("/x", KEY.secret), entry, Policy(resource="users/42")).allowed


def test_store_unavailable_is_503() -> None:
    decision = run(request(credential=KEY.secret), UNAVAILABLE)
    assert (decision.status, decision.reason) == (503, Reason.UNAVAILABLE)


def test_old_secret_works_only_during_its_grace_period() -> None:
    new = generate_key("sk_live")
    during = KeyEntry(digest=new.digest, identity=IDENTITY, previous_digest=KEY.digest,
                      previous_until=NOW + 1)  # fmt: skip
    after = KeyEntry(digest=new.digest, identity=IDENTITY, previous_digest=KEY.digest,
                     previous_until=NOW)  # fmt: skip
    assert run(request(credential=KEY.secret), during).allowed
    assert run(request(credential=KEY.secret), after).reason is Reason.INVALID_KEY


def test_missing_permissions_are_named_only_after_the_secret_verified() -> None:
    decision = run(request(credential=KEY.secret), ENTRY, Policy(("users:read", "admin", "x")))
    assert b"Missing: admin, x." in decision.body


@pytest.mark.parametrize(
    ("path", "bad"),
    [("/users/1", False), ("/", False), ("/a.b/c.d", False), ("/.well-known/x", False),
     ("/a/../b", True), ("/a/./b", True), ("/..", True), ("//a", True), ("/a//b", True),
     ("/a/", False), ("/a/..", True)],
)  # fmt: skip
def test_path_problem(path: str, bad: bool) -> None:
    assert path_problem(path) is bad


def limited_entry(*rules: dict[str, object]) -> KeyEntry:
    limits = compile_limits([RateLimitRule.model_validate(r) for r in rules])
    return KeyEntry(digest=KEY.digest, identity=IDENTITY, limits=limits)


def test_rules_ask_for_one_hit_with_every_matching_counter() -> None:
    entry = limited_entry(
        {"unit": "minute", "max_requests": 10},
        {"unit": "second", "max_requests": 2, "endpoints": ["GET /users/*"]},
        {"unit": "second", "max_requests": 2, "endpoints": ["POST /users/*"]},
    )
    facts = request(credential=KEY.secret)
    hit = after_lookup(begin(facts), entry, facts, ANY, NOW)  # type: ignore[arg-type]
    assert isinstance(hit, Hit)
    assert [limit.max_requests for limit, _ in hit.checks] == [10, 2]
    assert hit.now_ms == int(NOW * 1000)
    assert len({counter for _, counter in hit.checks}) == 2


def test_a_key_whose_rules_match_nothing_here_asks_for_no_hit() -> None:
    entry = limited_entry({"unit": "second", "max_requests": 1, "endpoints": ["/orders/*"]})
    facts = request(credential=KEY.secret)
    assert after_lookup(begin(facts), entry, facts, ANY, NOW) == Decision.allow(IDENTITY)  # type: ignore[arg-type]


def test_the_limiter_answer_becomes_the_verdict() -> None:
    entry = limited_entry({"unit": "second", "max_requests": 1})
    facts = request(credential=KEY.secret)
    hit = after_lookup(begin(facts), entry, facts, ANY, NOW)  # type: ignore[arg-type]
    assert isinstance(hit, Hit)
    ((limit, _),) = hit.checks
    admitted = evaluate(limit, (0, 0), hit.now_ms)
    refused = evaluate(limit, (1, 0), hit.now_ms)
    ok = after_hit(hit, (True, (admitted,)))
    assert ok.allowed
    assert ok.identity is not None
    assert ok.identity.rate_limits == (admitted,)
    assert dict(ok.headers)["x-ratelimit-remaining"] == "0"
    no = after_hit(hit, (False, (refused,)))
    assert (no.status, no.reason) == (429, Reason.RATE_LIMITED)
    assert dict(no.headers)["retry-after"] == "2"  # sliding: the old count weighs until then
    assert after_hit(hit, UNAVAILABLE).reason is Reason.UNAVAILABLE
