"""The ``Limiter`` port: check and count one request against several rules, atomically."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from keysentry.core.ratelimit import Limit, Outcome

__all__ = ["Limiter"]


class Limiter(Protocol):
    """Counters for rate limits. The window arithmetic lives in :mod:`keysentry.core.ratelimit`."""

    def hit(
        self, checks: Sequence[tuple[Limit, str]], now_ms: int
    ) -> tuple[bool, tuple[Outcome, ...]]:
        """Decide one request against every ``(limit, counter_key)`` pair.

        If every limit admits it, count it against all of them; otherwise count it against
        none. Must be atomic with respect to concurrent calls.
        """

    def close(self) -> None:
        """Release resources."""
