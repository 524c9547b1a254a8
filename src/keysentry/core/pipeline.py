"""The verification pipeline (docs/design.md §5), as three pure steps. Pure.

Verification needs I/O twice at most: to look the key up (cache, then store) and to count
the request against its rate limits (in-process or Redis). The core does every check itself
and, where it needs I/O, *returns* a request for it instead of performing it, in the style of
h11 and other sans-I/O libraries:

1. :func:`begin` checks the path shape (400), the credential (401) and the key's format and
   checksum (401, before any lookup), and returns a :class:`LookupKey` or a refusal;
2. the driver answers the lookup with the :class:`KeyEntry`, ``None`` ("no such key") or
   :data:`UNAVAILABLE`, and :func:`after_lookup` checks the hash (401), the key and app state
   (403), permissions and resource (403); it returns the verdict, or a :class:`Hit` when rate
   limits apply;
3. the driver performs the hit on the limiter and :func:`after_hit` turns its answer into the
   verdict (429 with ``Retry-After`` if any rule refused).

The drivers (:mod:`keysentry.verification.driver`) are the only code written twice, sync and
async; they only sequence these calls. The tests drive the steps by hand, with no event loop
and no store. Plain function calls rather than a generator, whose resumptions cost more.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import Enum
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Final, NamedTuple, final

from keysentry.core.credentials import MAX_CREDENTIAL_LENGTH, extract_credential
from keysentry.core.credits import CreditPlan, next_refill
from keysentry.core.decision import Decision, Identity, KeyEntry, Reason
from keysentry.core.headers import credits_header
from keysentry.core.keys import SUFFIX_LENGTH, check_key, sha256
from keysentry.core.ratelimit import Limit, Outcome, plan_checks

__all__ = [
    "UNAVAILABLE",
    "Hit",
    "LimiterAnswer",
    "LookupKey",
    "Policy",
    "RequestFacts",
    "Spend",
    "admitted",
    "after_hit",
    "after_lookup",
    "after_spend",
    "authorize",
    "begin",
    "counted",
    "normal_method",
    "path_problem",
    "permitted",
]


class _Unavailable(Enum):
    # an enum member, so that "result is UNAVAILABLE" narrows the type for mypy
    UNAVAILABLE = "UNAVAILABLE"

    def __repr__(self) -> str:
        return "UNAVAILABLE"


#: The answer to a lookup when the store could not be asked and nothing was cached, and to
#: a hit when the limiter failed and the policy is to refuse ("closed").
UNAVAILABLE: Final = _Unavailable.UNAVAILABLE
#: How many verdicts of steps 5-6 a cached key remembers (see :func:`permitted`).
MAX_VERDICTS: Final = 64
_OK: Final = Reason.OK  # a module global: Reason.OK goes through the enum's metaclass
_INVALID_PATH: Final = Decision.deny(Reason.INVALID_PATH)
_INVALID_METHOD: Final = Decision.deny(Reason.INVALID_METHOD)
# RFC 9110 section 9.1: a method is a token
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
COMMON_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
_INVALID_KEY: Final = Decision.deny(Reason.INVALID_KEY)
_MAX_BEARER: Final = len("Bearer ") + MAX_CREDENTIAL_LENGTH
# the store failed with nothing usable cached, or the limiter failed and on_limiter_error is
# "closed": a 503 that says when to come back (a failing store is asked again after 1 s)
_UNAVAILABLE: Final = Decision.deny(Reason.UNAVAILABLE, headers=(("retry-after", "1"),))


# The value types below are NamedTuples, not frozen dataclasses, which cost more to build
# (docs/performance.md). On the hot path they are built with tuple.__new__ and every field
# given, which skips the generated __new__, a Python function.
_new: Final = tuple.__new__


class RequestFacts(NamedTuple):
    """The parts of a request verification looks at, gathered by an adapter.

    Attributes:
        method: the HTTP method as :func:`normal_method` gives it (upper-case; ``""`` for a
            method that is not an HTTP token, which is refused).
        path: the path as the router sees it (relative to the mount point), with leading ``/``.
        authorization: every ``Authorization`` header value, latin-1 decoded.
        api_key: every ``X-API-Key`` value (empty unless the adapter reads that header).
        client_ip: the client's address, for per-IP rate limits.
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
    cost: int = 1
    """Credits the request spends, when the key has credits (0: verify without spending)."""


@final
class LookupKey(NamedTuple):
    """Step 1's request: "find the key whose SHA-256 is *digest*".

    Attributes:
        prefix: the key's prefix (an app's ``key_prefix``).
        secret: the whole key, as presented; it never leaves the process.
        digest: its hex SHA-256, the cache key and the stored form.
    """

    prefix: str
    secret: str
    digest: str

    @property
    def suffix(self) -> str:
        """The last characters of the key, which the store indexes."""
        return self.secret[-SUFFIX_LENGTH:]

    def __repr__(self) -> str:
        return f"LookupKey(prefix={self.prefix!r}, suffix={self.suffix!r})"


@final
class Hit(NamedTuple):
    """Step 2's request: "count this request against these counters, if all admit it".

    The driver answers ``(allowed, outcomes)`` from the limiter, or :data:`UNAVAILABLE`.
    """

    checks: tuple[tuple[Limit, str], ...]
    now_ms: int
    identity: Identity


@final
class Spend(NamedTuple):
    """Step 7 for a key with credits: "take *cost* of the key's credits, then count the
    rate limits (if any); if they refuse, give the credits back"."""

    checks: tuple[tuple[Limit, str], ...]
    now_ms: int
    identity: Identity
    plan: CreditPlan
    cost: int


LookupResult = KeyEntry | None | _Unavailable
#: A limiter's answer to a hit: ``(allowed, outcomes)``, or :data:`UNAVAILABLE` (refuse, 503).
LimiterAnswer = tuple[bool, tuple[Outcome, ...]] | _Unavailable


def normal_method(method: str) -> str:
    """The request method as every check sees it: upper-case, or ``""`` when it is not an
    RFC 9110 token (then :func:`begin` refuses with 400).

    Servers and frameworks upper-case the method only after the middleware has run, so
    ``delete`` must meet the ``DELETE`` rules here, before any pattern sees it.
    """
    if method in COMMON_METHODS:
        return method
    if not isinstance(method, str) or not method.isascii() or not _TOKEN.fullmatch(method):
        return ""
    return method.upper()


def path_problem(path: str) -> bool:
    """Whether *path* has empty (``//``) or dot (``.``, ``..``) segments."""
    if "//" in path:
        return True
    if "." not in path:
        return False
    return any(segment in (".", "..") for segment in path.split("/"))


def begin(request: RequestFacts) -> Decision | LookupKey:
    """Steps 1-3: the method and path, the credential, the key's format and checksum.

    Returns the refusal, or the lookup to perform.
    """
    if not request.method:
        return _INVALID_METHOD  # normal_method() found no HTTP token
    path = request.path
    if ("//" in path or "." in path) and path_problem(path):
        return _INVALID_PATH
    authorization = request.authorization
    value = authorization[0] if len(authorization) == 1 else ""
    credential: str | Reason
    if (
        value.startswith("Bearer ")
        and not request.api_key
        and len(value) <= _MAX_BEARER
        and "\t" not in value
        and " " not in value[7:]
    ):
        credential = value[7:]  # the usual request, without extract_credential's general path
    else:
        credential = extract_credential(authorization, request.api_key)
        if type(credential) is Reason:
            return Decision.deny(credential)
    prefix = check_key(credential)
    if prefix is None:
        return _INVALID_KEY
    # hash_key(), inline; a key that passed check_key is ASCII
    return _new(LookupKey, (prefix, credential, sha256(credential.encode("ascii")).hexdigest()))


def after_lookup(
    lookup: LookupKey, entry: LookupResult, request: RequestFacts, policy: Policy, now: float
) -> Decision | Hit | Spend:
    """Steps 4-7 once the key was looked up, at time *now* (Unix seconds).

    Returns the verdict, or the rate-limit hit to perform when rules apply.
    """
    if entry is None:
        return _INVALID_KEY
    if type(entry) is not KeyEntry:
        return _UNAVAILABLE
    if entry.digest != lookup.digest and (
        entry.previous_until is None or now >= entry.previous_until
    ):
        return _INVALID_KEY  # an old secret whose grace period is over
    if not entry.usable or (entry.expires_at is not None and now >= entry.expires_at):
        return refusal(entry, now)
    if entry.networks is not None and not address_allowed(entry.networks, request.client_ip):
        return Decision.deny(Reason.IP_DENIED, entry.identity)
    decision = permitted(entry, policy.permissions, policy.resource, request.path)
    if not decision.allowed:
        return decision
    if entry.credits is not None:  # cost 0 too: it spends nothing, and learns the balance
        return _new(Spend, (_checks(entry, request), int(now * 1000), entry.identity,
                            entry.credits, policy.cost))  # fmt: skip
    if not entry.limits:
        return decision
    checks = entry.checks
    if checks is None:  # some rule depends on the endpoint or the client's address
        checks = _planned(entry, request)
    if not checks:
        return decision
    return _new(Hit, (checks, int(now * 1000), entry.identity))


def permitted(
    entry: KeyEntry, permissions: tuple[str, ...], resource: str | None, path: str
) -> Decision:
    """Steps 5-6 for a usable key: its allowed verdict, or the 403 for a missing permission
    or resource (*resource*, or when it is ``None`` the request's *path* without its ``/``).
    Remembered on the entry: the same key asks for the same few things again and again."""
    if not permissions and not entry.identity.resources:
        return entry.allowed  # nothing to check
    verdicts = entry.verdicts
    # the path matters only when it is the resource
    asked = (permissions, resource, path if resource is None else "")
    remembered = verdicts.get(asked)
    if remembered is None:
        wanted = path[1:] if resource is None else resource
        remembered = authorize(entry.identity, permissions, wanted, entry.allowed)
        if len(verdicts) < MAX_VERDICTS:
            verdicts[asked] = remembered
    return remembered


def admitted(identity: Identity) -> Decision:
    """The verdict of an admitted request from its identity, which carries all the verdict
    adds: the request's rate-limit outcomes and, for a key with credits, the credits left
    (``X-Credits-Remaining``)."""
    remaining = identity.credits_remaining
    headers = () if remaining is None else (credits_header(remaining),)
    return _new(Decision, (True, _OK, identity, headers, b"", identity.rate_limits))


def counted(identity: Identity, result: LimiterAnswer) -> Decision:
    """Step 7's verdict from the limiter's answer for a request by *identity*."""
    if type(result) is not tuple:
        return _UNAVAILABLE  # the limiter failed and the policy is "closed"
    allowed, outcomes = result
    identity = identity.with_rate_limits(outcomes)
    if allowed:
        return admitted(identity)
    return Decision.deny(Reason.RATE_LIMITED, identity, rate_limits=outcomes)


def _checks(entry: KeyEntry, request: RequestFacts) -> tuple[tuple[Limit, str], ...]:
    if entry.checks is not None or not entry.limits:
        return entry.checks or ()
    return _planned(entry, request)


def _planned(entry: KeyEntry, request: RequestFacts) -> tuple[tuple[Limit, str], ...]:
    """The counters of this request, when they depend on its endpoint or address."""
    identity = entry.identity
    return plan_checks(
        entry.limits, request.method, request.path, identity.key_id, identity.app_slug,
        request.client_ip, identity.sharing,
    )  # fmt: skip


def after_spend(spend: Spend, remaining: int | None, result: LimiterAnswer | None) -> Decision:
    """Step 7's verdict for a key with credits: *remaining* is what is left after taking the
    cost (``None``: there was not enough), *result* the limiter's answer (``None``: no rule
    applied)."""
    plan = spend.plan
    if remaining is None:
        refill = next_refill(plan, spend.now_ms / 1000)
        wait = () if refill is None else (
            ("retry-after", str(max(1, -(-(refill * 1000 - spend.now_ms) // 1000)))),)  # fmt: skip
        return Decision.deny(Reason.USAGE_EXCEEDED, spend.identity, headers=wait)
    if result is None:
        return admitted(spend.identity.with_credits(remaining, ()))
    if type(result) is not tuple:
        return _UNAVAILABLE
    allowed, outcomes = result
    identity = spend.identity.with_credits(remaining, outcomes)
    if allowed:
        return admitted(identity)
    return Decision.deny(Reason.RATE_LIMITED, identity, rate_limits=outcomes)


def after_hit(hit: Hit, result: LimiterAnswer) -> Decision:
    """Step 7's verdict from the limiter's answer to *hit*."""
    return counted(hit.identity, result)


def address_allowed(networks: tuple[IPv4Network | IPv6Network, ...], client_ip: str | None) -> bool:
    """Whether *client_ip* lies in one of *networks* (an unknown or unparsable address, or
    an IPv4-mapped IPv6 one outside them, does not)."""
    if not client_ip:
        return False
    try:
        address = ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 from a dual-stack socket
    return any(address in network for network in networks)


def refusal(entry: KeyEntry, now: float) -> Decision:
    """Step 4's 403 for a key whose secret verified but which may not be used now."""
    identity = entry.identity
    if entry.revoked:
        return Decision.deny(Reason.KEY_REVOKED, identity)
    if entry.expires_at is not None and now >= entry.expires_at:
        return Decision.deny(Reason.KEY_EXPIRED, identity)
    if not entry.active:
        return Decision.deny(Reason.KEY_DISABLED, identity)
    return Decision.deny(Reason.APP_DISABLED, identity)


def authorize(
    identity: Identity,
    permissions: Sequence[str],
    resource: str,
    allowed: Decision | None = None,
) -> Decision:
    """Steps 5-6: does this (already verified) identity hold *permissions* and *resource*?

    Used by :func:`after_lookup`, and by ``ks.require`` when a middleware has already verified the
    key and only the handler's own requirements are left to check.
    """
    for permission in permissions:
        if not identity.has_permission(permission):
            missing = [p for p in permissions if not identity.has_permission(p)]
            detail = "Missing: " + ", ".join(missing) + "."
            return Decision.deny(Reason.PERMISSION_DENIED, identity, detail)
    if identity.resources and not identity.has_resource(resource):
        return Decision.deny(Reason.RESOURCE_DENIED, identity)
    return allowed if allowed is not None else Decision.allow(identity)
