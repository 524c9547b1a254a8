"""Rate-limit semantics (docs/design.md §6). Pure: times are integer milliseconds passed in.

A :class:`Limit` is a compiled rule. Each request that a rule's endpoints match counts
against one counter, named by the rule and its ``mode`` (per app, per key, per endpoint
pattern, per client IP). Limiters (``keysentry.limiters``) keep the counters; the arithmetic
lives here, once, so the in-process and Redis limiters agree by construction.

Algorithms, per counter, with ``W`` the window length and ``e`` the time into it:

* **fixed window**: admit while ``count + 1 <= max``.
* **sliding window counter** (Cloudflare, Unkey): the previous window's count weighs
  ``(W - e) / W``; admit iff ``(curr + 1) * W + prev * (W - e) <= max * W``. As the second
  term is never negative, no aligned window ever admits more than ``max`` either.

Calendar units (``calendar_day``, ``calendar_month``) are fixed windows aligned to UTC days
and months. A request is admitted only if *every* matching rule admits it, and then counts
against all of them; a refused request counts against none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NamedTuple, Protocol

from keysentry.core.patterns import EndpointPattern, parse_endpoint

__all__ = [
    "NO_SHARING",
    "SHARED_MODES",
    "Counter",
    "Limit",
    "Outcome",
    "ceil_seconds",
    "compile_limits",
    "counter_key",
    "decide_limits",
    "judge",
    "plan_checks",
    "static_checks",
    "window",
]

Algorithm = Literal["sliding_window", "fixed_window"]


@dataclass(frozen=True, slots=True)
class Limit:
    """A rule compiled for checking.

    Attributes:
        name: the policy identifier in headers (the rule's short form).
        max_requests: quota per window.
        window_ms: window length (for calendar months: the nominal 31 days; see
            :func:`window` for the real bounds).
        calendar: ``"day"`` or ``"month"`` for calendar units, else ``None``.
        mode: whose counter a request counts against.
        endpoints: the requests this rule counts.
        sliding: sliding window counter (else fixed window).
    """

    name: str
    max_requests: int
    window_ms: int
    calendar: str | None
    mode: str
    endpoints: tuple[EndpointPattern, ...]
    priority: int
    sliding: bool
    # header pieces, built once per rule rather than on every request
    policy_item: str = field(init=False, repr=False, compare=False)
    header_name: str = field(init=False, repr=False, compare=False)
    limit_text: str = field(init=False, repr=False, compare=False)
    policy_header: tuple[str, str] = field(init=False, repr=False, compare=False)
    limit_header: tuple[str, str] = field(init=False, repr=False, compare=False)
    raw_policy_header: tuple[bytes, bytes] = field(init=False, repr=False, compare=False)
    raw_limit_header: tuple[bytes, bytes] = field(init=False, repr=False, compare=False)
    raw_remaining_prefix: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = _sf_string(self.name)
        object.__setattr__(self, "header_name", name)
        object.__setattr__(self, "limit_text", str(self.max_requests))
        item = f"{name};q={self.max_requests};w={ceil_seconds(self.window_ms)}"
        object.__setattr__(self, "policy_item", item)
        object.__setattr__(self, "policy_header", ("ratelimit-policy", item))
        object.__setattr__(self, "limit_header", ("x-ratelimit-limit", self.limit_text))
        # the same, as ASGI sends them (the header name is ASCII: see _sf_string)
        object.__setattr__(self, "raw_policy_header", (b"ratelimit-policy", item.encode()))
        raw_limit = (b"x-ratelimit-limit", self.limit_text.encode())
        object.__setattr__(self, "raw_limit_header", raw_limit)
        object.__setattr__(self, "raw_remaining_prefix", name.encode() + b";r=")

    def matching_endpoint(self, method: str, path: str) -> EndpointPattern | None:
        """The first endpoint pattern of this rule that the request falls under."""
        for endpoint in self.endpoints:
            if endpoint.matches(method, path):
                return endpoint
        return None


class RuleSpec(Protocol):
    """What :func:`compile_limits` reads of a rule: a validated
    :class:`~keysentry.models.RateLimitRule` (core imports no model)."""

    @property
    def unit(self) -> str: ...
    @property
    def short(self) -> str: ...
    @property
    def max_requests(self) -> int: ...
    @property
    def window_ms(self) -> int: ...
    @property
    def mode(self) -> str: ...
    @property
    def endpoints(self) -> Sequence[str]: ...
    @property
    def priority(self) -> int: ...


def compile_limits(
    rules: Iterable[RuleSpec], algorithm: Algorithm = "sliding_window"
) -> tuple[Limit, ...]:
    """Compile validated :class:`~keysentry.models.RateLimitRule` objects, highest priority
    first (ties keep their order)."""
    limits = []
    for rule in rules:
        calendar = {"calendar_day": "day", "calendar_month": "month"}.get(rule.unit)
        limits.append(
            Limit(
                name=rule.short,
                max_requests=rule.max_requests,
                window_ms=rule.window_ms,  # calendar months: the nominal 31 days
                calendar=calendar,
                mode=rule.mode,
                endpoints=tuple(parse_endpoint(e) for e in rule.endpoints),
                priority=rule.priority,
                sliding=algorithm == "sliding_window" and calendar is None,
            )
        )
    return tuple(sorted(limits, key=lambda limit: -limit.priority))


def _month_bounds(now_ms: int) -> tuple[int, int]:
    moment = datetime.fromtimestamp(now_ms / 1000, UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int((end - start).total_seconds() * 1000)


def window(limit: Limit, now_ms: int) -> tuple[int, int]:
    """``(start_ms, length_ms)`` of the window of *limit* that contains *now_ms*: the one
    definition of a window in Python (the Redis script has its own, in Lua, checked against
    this one by the tests)."""
    if limit.calendar == "month":
        return _month_bounds(now_ms)
    length = limit.window_ms  # fixed lengths, calendar days included, align to the epoch
    return now_ms - now_ms % length, length


# Counter and Outcome are NamedTuples: built for every rate-limited request (with
# tuple.__new__ and every field, as in core.pipeline).
_new = tuple.__new__


class Counter(NamedTuple):
    """A counter's state as a limiter read it: counts in the current and previous window."""

    current: int = 0
    previous: int = 0


class Outcome(NamedTuple):
    """The verdict of one rule on one request.

    Attributes:
        limit: the rule.
        allowed: whether this rule admits the request.
        remaining: requests left in the window after this one (if it is admitted).
        reset_ms: time until the current window ends.
        retry_ms: when refused, the least wait after which this rule admits a lone retry.
    """

    limit: Limit
    allowed: bool
    remaining: int
    reset_ms: int
    retry_ms: int = 0


def _retry_ms(limit: Limit, current: int, previous: int, elapsed: int, length: int) -> int:
    """Least wait after which one more request is admitted, if nothing else is."""
    cap = limit.max_requests * length
    need = (current + 1) * length
    if limit.sliding and previous and need <= cap:
        # still in this window: prev * (length - elapsed - wait) <= cap - need
        wait = (length - elapsed) - (cap - need) // previous
        if 0 <= wait < length - elapsed:
            return max(wait, 1)
    to_next = length - elapsed
    if not limit.sliding or current < limit.max_requests:
        return to_next
    # in the next window the old count weighs (length - t) / length:
    # length + current * (length - t) <= cap  <=>  t >= length - (cap - length) / current
    after = length - (cap - length) // current
    return to_next + max(after, 0)


def evaluate(
    limit: Limit, counter: tuple[int, int], now_ms: int, counted: bool | None = None
) -> Outcome:
    """Would *limit* admit one more request now, given *counter* (a :class:`Counter` or a
    ``(current, previous)`` pair)?

    ``remaining`` assumes the request is counted if *counted* (default: if this rule admits
    it); a request refused by another rule is not counted here either.
    """
    start, length = window(limit, now_ms)
    return judge(limit, counter[0], counter[1], now_ms - start, length, counted)


def judge(
    limit: Limit,
    current: int,
    previous: int,
    elapsed: int,
    length: int,
    counted: bool | None = None,
) -> Outcome:
    """:func:`evaluate` for a caller that already has the window (``elapsed`` ms into a
    window of ``length`` ms): the in-process limiter, which needs the window's start too."""
    used = current * length
    if previous and limit.sliding:
        used += previous * (length - elapsed)
    cap = limit.max_requests * length
    allowed = used + length <= cap
    if allowed and counted is None:  # the usual answer: admitted, and this request counts
        return _new(Outcome, (limit, True, (cap - used) // length - 1, length - elapsed, 0))
    if counted:
        used += length
    remaining = (cap - used) // length if used < cap else 0
    if allowed:
        return _new(Outcome, (limit, True, remaining, length - elapsed, 0))
    retry = _retry_ms(limit, current, previous, elapsed, length)
    return _new(Outcome, (limit, False, remaining, length - elapsed, retry))


def decide_limits(
    limits: Sequence[Limit], counters: Sequence[tuple[int, int]], now_ms: int
) -> tuple[bool, tuple[Outcome, ...]]:
    """Evaluate every matching rule; the request is admitted only if all admit it, and then
    counts against all of them (else against none: ``remaining`` says so too)."""
    if len(limits) == 1:  # the common case, without the generator machinery
        outcome = evaluate(limits[0], counters[0], now_ms)
        return outcome.allowed, (outcome,)
    outcomes = tuple(evaluate(lim, c, now_ms) for lim, c in zip(limits, counters, strict=True))
    if all(o.allowed for o in outcomes):
        return True, outcomes
    # refused: rules that would have admitted it must not count it in "remaining" either
    return False, tuple(
        evaluate(lim, c, now_ms, counted=False) if o.allowed else o
        for lim, c, o in zip(limits, counters, outcomes, strict=True)
    )


#: The modes whose counter the keys of one owner, organization or workspace share (within
#: their app), and the index of that id in a request's *sharing* ids.
SHARED_MODES = {"per_owner": 0, "per_organization": 1, "per_workspace": 2}
Sharing = tuple[str | None, str | None, str | None]  # owner_user_id, organization, workspace
NO_SHARING: Sharing = (None, None, None)


def counter_key(limit: Limit, endpoint: EndpointPattern, key_id: str, app_slug: str,
                client_ip: str | None,
                sharing: Sharing = NO_SHARING) -> str:  # fmt: skip
    """The counter a request counts against under *limit*, by the rule's mode.

    It starts with ``{app_slug}``: a Redis Cluster hash tag, so that every counter of one
    request (all of one app's) lives in one slot. *sharing* is the key's
    ``(owner_user_id, organization_id, workspace_id)``: under ``per_owner``,
    ``per_organization`` and ``per_workspace`` every key with the same id counts against
    one counter; a key without that id is limited on its own, as under ``per_key``.
    """
    mode = limit.mode
    shared = SHARED_MODES.get(mode)
    if shared is not None:
        who = sharing[shared]
        owner = f"id:{who}" if who is not None else f"key:{key_id}"
        return f"{{{app_slug}}}:{mode}|{owner}|{limit.name}"
    owner = app_slug if mode.startswith("per_app") else key_id
    if mode.endswith("_endpoint"):
        owner = f"{owner}|{endpoint.text}"
    elif mode.endswith("_ip"):
        owner = f"{owner}|{client_ip or '-'}"
    return f"{{{app_slug}}}:{mode}|{owner}|{limit.name}"


def plan_checks(
    limits: Sequence[Limit], method: str, path: str, key_id: str, app_slug: str,
    client_ip: str | None, sharing: Sharing = NO_SHARING,
) -> tuple[tuple[Limit, str], ...]:  # fmt: skip
    """The ``(limit, counter key)`` pairs a request counts against: every rule whose
    endpoints it matches, highest priority first."""
    checks = []
    for limit in limits:
        endpoint = limit.matching_endpoint(method, path)
        if endpoint is not None:
            checks.append(
                (limit, counter_key(limit, endpoint, key_id, app_slug, client_ip, sharing))
            )
    return tuple(checks)


def static_checks(
    limits: Sequence[Limit], key_id: str, app_slug: str,
    sharing: Sharing = NO_SHARING,
) -> tuple[tuple[Limit, str], ...] | None:  # fmt: skip
    """The checks of :func:`plan_checks` when they are the same for every request with this
    key (every rule counts every request, none per IP), computed once per cached key; else
    ``None``."""
    checks = []
    for limit in limits:
        if not limit.endpoints:
            continue  # counts nothing
        first = limit.endpoints[0]
        if not first.universal or limit.mode.endswith("_ip"):
            return None
        checks.append((limit, counter_key(limit, first, key_id, app_slug, None, sharing)))
    return tuple(checks)


def _sf_string(text: str) -> str:
    if not text.isascii() or not text.isprintable():
        text = text.encode("ascii", "backslashreplace").decode().replace("\\", "/")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ceil_seconds(ms: int) -> int:
    """*ms* milliseconds in whole seconds, rounded up, at least 1 (the headers' unit)."""
    return max(1, -(-ms // 1000))
