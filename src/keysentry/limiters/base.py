"""The ``Limiter`` port: check and count one request against several rules, atomically."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from keysentry.core.pipeline import LimiterAnswer
from keysentry.core.ratelimit import Limit
from keysentry.errors import ConfigurationError

__all__ = ["Limiter", "OnError", "check_on_error"]

#: What to do when a shared limiter cannot be reached (see ``KeySentry``'s argument).
OnError = Literal["open", "closed", "local"]


def check_on_error(value: object) -> OnError:
    """Validate an ``on_limiter_error`` value.

    Raises:
        ConfigurationError: it is not ``"open"``, ``"closed"`` or ``"local"``.
    """
    if value not in ("open", "closed", "local"):
        raise ConfigurationError("on_limiter_error must be 'open', 'closed' or 'local'")
    return value


class Limiter(Protocol):
    """Counters for rate limits. The window arithmetic lives in :mod:`keysentry.core.ratelimit`.

    ``remote`` says whether :meth:`hit` does I/O: the async driver then calls :meth:`ahit`
    instead, so that the event loop never waits on a socket.
    """

    remote: bool

    def hit(self, checks: Sequence[tuple[Limit, str]], now_ms: int) -> LimiterAnswer:
        """Decide one request against every ``(limit, counter_key)`` pair.

        If every limit admits it, count it against all of them; otherwise count it against
        none. Must be atomic with respect to concurrent calls, in this process and (for a
        shared limiter) in every other. Returns ``(allowed, outcomes)``, or
        :data:`keysentry.core.pipeline.UNAVAILABLE` when the request must be refused with a
        503 because the limiter failed.
        """

    async def ahit(self, checks: Sequence[tuple[Limit, str]], now_ms: int) -> LimiterAnswer:
        """:meth:`hit` for async callers."""

    def close(self) -> None:
        """Release resources."""

    async def aclose(self) -> None:
        """Release what belongs to the running event loop."""
