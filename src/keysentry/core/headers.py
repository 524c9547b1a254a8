"""The rate-limit response headers of a verdict's outcomes: ``RateLimit-Policy`` and
``RateLimit`` (draft-ietf-httpapi-ratelimit-headers-11), ``X-RateLimit-*`` and
``Retry-After``; as str, and as the bytes ASGI sends. And ``X-Credits-Remaining``."""

from __future__ import annotations

from collections.abc import Sequence

from keysentry.core.ratelimit import Outcome, ceil_seconds

__all__ = ["ALLOWED_HEADER_NAMES", "allowed_header_bytes", "credits_header", "rate_headers"]

#: Every header name :func:`allowed_header_bytes` may set, encoded: a response that has none
#: of them needs no check for one to replace.
ALLOWED_HEADER_NAMES = frozenset({
    b"ratelimit-policy", b"ratelimit", b"x-ratelimit-limit", b"x-ratelimit-remaining",
    b"x-ratelimit-reset", b"x-credits-remaining",
})  # fmt: skip


def credits_header(remaining: int) -> tuple[str, str]:
    """``X-Credits-Remaining``: the credits a key with a credit limit has left."""
    return ("x-credits-remaining", str(remaining))


def _reset(outcome: Outcome) -> int:
    """A rule's ``t`` (draft-11: seconds until its quota has room again): for a rule that
    refused, when a lone retry is admitted, which a sliding window can put past the end of
    the current window; else when the current window ends."""
    return ceil_seconds(outcome.reset_ms if outcome.allowed else outcome.retry_ms)


def rate_headers(outcomes: Sequence[Outcome], refused: bool) -> tuple[tuple[str, str], ...]:
    """``RateLimit-Policy`` and ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers-11), the
    common ``X-RateLimit-*`` for the most restrictive rule, and ``Retry-After`` on a refusal:
    whole seconds, at least 1, never before a lone retry would be admitted, and equal to the
    ``t`` of the refusing rule that waits longest."""
    if not outcomes:
        return ()
    tightest = outcomes[0]
    if len(outcomes) == 1 and not refused:  # the usual answer, with what can be prebuilt
        only = tightest.limit
        left = str(tightest.remaining)
        resets = str(max(1, -(-tightest.reset_ms // 1000)))  # ceil_seconds(), inline
        return (
            only.policy_header,
            ("ratelimit", f"{only.header_name};r={left};t={resets}"),
            only.limit_header,
            ("x-ratelimit-remaining", left),
            ("x-ratelimit-reset", resets),
        )
    if len(outcomes) == 1:
        limit = tightest.limit
        reset = _reset(tightest)
        policy = limit.policy_item
        current = f"{limit.header_name};r={tightest.remaining};t={reset}"
    else:
        policy = ", ".join(o.limit.policy_item for o in outcomes)
        current = ", ".join(
            f"{o.limit.header_name};r={o.remaining};t={_reset(o)}" for o in outcomes
        )
        tightest = min(outcomes, key=lambda o: (o.allowed, o.remaining, -o.reset_ms))
        reset = _reset(tightest)
    headers = (
        ("ratelimit-policy", policy),
        ("ratelimit", current),
        ("x-ratelimit-limit", tightest.limit.limit_text),
        ("x-ratelimit-remaining", str(tightest.remaining)),
        ("x-ratelimit-reset", str(reset)),
    )
    if not refused:
        return headers
    wait = max(_reset(o) for o in outcomes if not o.allowed)
    return (*headers, ("retry-after", str(wait)))


# The reset seconds as bytes, by value: a window has few (at most its length in seconds),
# and looking them up is cheaper than formatting them on every request.
_SECONDS: dict[int, bytes] = {}
_SECONDS_MAX = 4096


def _seconds_bytes(seconds: int) -> bytes:
    encoded = b"%d" % (seconds if seconds > 0 else 1)
    if len(_SECONDS) < _SECONDS_MAX:
        _SECONDS[seconds] = encoded
    return encoded


def allowed_header_bytes(
    rate_limits: Sequence[Outcome], credits_remaining: int | None = None
) -> list[tuple[bytes, bytes]]:
    """An admitted request's headers as ASGI sends them: :func:`rate_headers` of its
    *rate_limits* and, for a key with credits, :func:`credits_header`. The usual one rule's
    come from its encoded pieces (no str is built and encoded on each request)."""
    if len(rate_limits) != 1:
        headers = [(n.encode(), v.encode()) for n, v in rate_headers(rate_limits, False)]
    else:
        outcome = rate_limits[0]
        limit = outcome.limit
        left = b"%d" % outcome.remaining
        seconds = -(-outcome.reset_ms // 1000)  # ceil_seconds(), inline: a max() call costs more
        resets = _SECONDS.get(seconds)
        if resets is None:
            resets = _seconds_bytes(seconds)
        headers = [
            limit.raw_policy_header,
            (b"ratelimit", limit.raw_remaining_prefix + left + b";t=" + resets),
            limit.raw_limit_header,
            (b"x-ratelimit-remaining", left),
            (b"x-ratelimit-reset", resets),
        ]
    if credits_remaining is not None:
        name, value = credits_header(credits_remaining)
        headers.append((name.encode(), value.encode()))
    return headers
