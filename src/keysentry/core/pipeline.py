"""The verification pipeline (DESIGN.md section 5) as a generator. Pure.

:func:`verify` does every check itself and *yields* the one thing it cannot do without I/O,
a :class:`LookupKey`; the driver (``keysentry._drive``) answers with the :class:`KeyEntry`,
``None`` for "no such key", or :data:`UNAVAILABLE`. Like httpx's ``Auth.auth_flow``, this
keeps one copy of the logic for sync and async callers, and the tests drive it with
``next()`` and ``send()``, no event loop, no database.

Steps, in order: path shape (400), credential (401), key format and checksum (401, before any
lookup), lookup and hash (401), key and app state (403), permissions (403), resource (403), then
rate limits (429): a second effect, :class:`Hit`, asks the limiter to count the request
against every matching rule at once.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, Final, NamedTuple

from keysentry.core.credentials import extract_credential
from keysentry.core.decision import Decision, Identity, KeyEntry, Reason
from keysentry.core.keys import ParsedKey, hash_key, hashes_match, parse_key
from keysentry.core.ratelimit import Limit, plan_checks, rate_headers
from keysentry.errors import KeyFormatError

__all__ = [
    "UNAVAILABLE",
    "Hit",
    "LookupKey",
    "Policy",
    "RequestFacts",
    "authorize",
    "path_problem",
    "select_candidate",
    "verify",
]


class _Unavailable:
    def __repr__(self) -> str:
        return "UNAVAILABLE"


#: Sent into the flow when the store could not be asked and nothing was cached.
UNAVAILABLE: Final = _Unavailable()
_DUMMY_DIGEST: Final = hash_key("keysentry-dummy")


# The three value types below are NamedTuples, not frozen dataclasses: they are built for
# every request, and a frozen dataclass costs 2.5x as much to build (benchmarks/asgi.py).
class RequestFacts(NamedTuple):
    """The parts of a request verification looks at, gathered by an adapter.

    Attributes:
        method: the HTTP method, upper-case.
        path: the path as the router sees it (relative to the mount point), with leading ``/``.
        authorization: every ``Authorization`` header value, latin-1 decoded.
        api_key: every ``X-API-Key`` value (empty unless the adapter reads that header).
        client_ip: the peer address, for per-IP rate limits.
    """

    method: str
    path: str
    authorization: tuple[str, ...]
    api_key: tuple[str, ...] = ()
    client_ip: str | None = None


class Policy(NamedTuple):
    """What this request requires.

    Attributes:
        permissions: every one must be granted by the key.
        resource: the resource to check against the app's resource patterns; ``None`` means
            the request path without its leading ``/``.
    """

    permissions: tuple[str, ...] = ()
    resource: str | None = None


class Hit(NamedTuple):
    """The effect: "count this request against these rate-limit counters, if all admit it".

    The driver answers ``(allowed, outcomes)`` or :data:`UNAVAILABLE`.
    """

    checks: tuple[tuple[Limit, str], ...]
    now_ms: int


class LookupKey(NamedTuple):
    """The effect: "find the key whose SHA-256 is *digest*". The secret stays in *key*."""

    key: ParsedKey
    digest: str


LookupResult = KeyEntry | None | _Unavailable
Effect = LookupKey | Hit
Flow = Generator[Effect, Any, Decision]


def path_problem(path: str) -> bool:
    """Whether *path* has empty (``//``) or dot (``.``, ``..``) segments."""
    if "//" in path:
        return True
    if "." not in path:
        return False
    return any(segment in (".", "..") for segment in path.split("/"))


def select_candidate(digest: str, candidates: Sequence[tuple[str, str | None]]) -> int | None:
    """Index of the candidate whose current or previous hash is *digest*, else ``None``.

    Every hash is compared, in constant time and without stopping at a match, and a dummy
    comparison runs when there are no candidates: the time taken does not tell "no key with
    this suffix" from "wrong secret".
    """
    found = None
    for index, (current, previous) in enumerate(candidates):
        if hashes_match(current, digest):
            found = index
        if previous is not None and hashes_match(previous, digest):
            found = index
    if not candidates:
        hashes_match(_DUMMY_DIGEST, digest)
    return found


def verify(request: RequestFacts, policy: Policy, now: float) -> Flow:
    """Decide on *request* at time *now* (Unix seconds). Yields one :class:`LookupKey`."""
    if path_problem(request.path):
        return Decision.deny(Reason.INVALID_PATH)
    credential = extract_credential(request.authorization, request.api_key)
    if isinstance(credential, Reason):
        return Decision.deny(credential)
    try:
        parsed = parse_key(credential)
    except KeyFormatError:
        return Decision.deny(Reason.INVALID_KEY)
    digest = parsed.digest
    entry = yield LookupKey(parsed, digest)
    if entry is None:
        return Decision.deny(Reason.INVALID_KEY)
    if not isinstance(entry, KeyEntry):
        return Decision.deny(Reason.UNAVAILABLE)
    if entry.digest != digest and (entry.previous_until is None or now >= entry.previous_until):
        return Decision.deny(Reason.INVALID_KEY)  # an old secret whose grace period is over
    resource = policy.resource if policy.resource is not None else request.path[1:]
    decision = decide(entry, policy.permissions, resource, now)
    if not decision.allowed or not entry.limits:
        return decision
    identity = entry.identity
    checks = plan_checks(
        entry.limits, request.method, request.path, identity.key_id, identity.app_slug,
        request.client_ip,
    )  # fmt: skip
    if not checks:
        return decision
    result = yield Hit(checks, int(now * 1000))
    if not isinstance(result, tuple):
        return Decision.deny(Reason.UNAVAILABLE)  # the limiter failed and policy is "closed"
    allowed, outcomes = result
    return Decision.rated(identity, allowed, outcomes, rate_headers(outcomes, not allowed))


def decide(entry: KeyEntry, permissions: Sequence[str], resource: str, now: float) -> Decision:
    """Steps 4-6 for a key whose secret verified."""
    identity = entry.identity
    if entry.revoked:
        return Decision.deny(Reason.KEY_REVOKED, identity)
    if entry.expires_at is not None and now >= entry.expires_at:
        return Decision.deny(Reason.KEY_EXPIRED, identity)
    if not entry.active:
        return Decision.deny(Reason.KEY_DISABLED, identity)
    if not entry.app_active:
        return Decision.deny(Reason.APP_DISABLED, identity)
    return authorize(identity, permissions, resource, entry.allowed)


def authorize(
    identity: Identity,
    permissions: Sequence[str],
    resource: str,
    allowed: Decision | None = None,
) -> Decision:
    """Steps 5-6: does this (already verified) identity hold *permissions* and *resource*?

    Used by :func:`decide`, and by ``ks.require`` when a middleware has already verified the
    key and only the handler's own requirements are left to check.
    """
    if permissions:
        missing = [p for p in permissions if not identity.has_permission(p)]
        if missing:
            detail = "Missing: " + ", ".join(missing) + "."
            return Decision.deny(Reason.PERMISSION_DENIED, identity, detail)
    if identity.resources and not identity.has_resource(resource):
        return Decision.deny(Reason.RESOURCE_DENIED, identity)
    return allowed if allowed is not None else Decision.allow(identity)
