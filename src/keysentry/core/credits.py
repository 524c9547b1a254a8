"""Credits: the arithmetic of a key's balance. Pure: no I/O, no clock.

A key with credits may make that many more requests (each costs 1, or what the caller says).
A refill *sets* the balance to its amount at the start of each period: UTC midnight
(``daily``), or 00:00 UTC on ``refill_day`` of each month (``monthly``, 1-28, so that every
month has the day). The store holds the balance; each process spends from *leases* it takes
from the store (:func:`lease_size` at a time), so the store never promises a credit twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple, TypeGuard

__all__ = [
    "LEASE_CAP",
    "MAX_CREDITS",
    "CreditPlan",
    "Pool",
    "is_amount",
    "lease",
    "lease_size",
    "next_refill",
    "period_start",
    "pool_key",
]

#: The most one lease takes from the store: what a crash or a Redis flush can lose at most.
LEASE_CAP = 1000
#: The largest balance a key may hold, and the largest cost or change: far beyond any real
#: use, and exact in every store's BIGINT and in a double.
MAX_CREDITS = 10**15
_DAY = 86_400
Pool = tuple[str, int, int]  # key id, generation, period


class CreditPlan(NamedTuple):
    """A key's credits as verification needs them (compiled into its cache entry)."""

    key_id: str
    app_slug: str
    generation: int
    """Bumped by ``update_credits(set=…)``: earlier leases stop counting."""
    interval: str | None = None
    """``"daily"``, ``"monthly"`` or ``None`` (no refill)."""
    amount: int = 0
    refill_day: int = 1


def period_start(plan: CreditPlan, now: float) -> int:
    """The start (Unix seconds) of the refill period holding *now*; 0 without refills."""
    if plan.interval is None:
        return 0
    if plan.interval == "daily":
        return int(now // _DAY) * _DAY
    moment = datetime.fromtimestamp(now, UTC)
    year, month = moment.year, moment.month
    if moment.day < plan.refill_day:
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return int(datetime(year, month, plan.refill_day, tzinfo=UTC).timestamp())


def next_refill(plan: CreditPlan, now: float) -> int | None:
    """When (Unix seconds) the next refill happens; ``None`` without refills."""
    if plan.interval is None:
        return None
    start = period_start(plan, now)
    if plan.interval == "daily":
        return start + _DAY
    begun = datetime.fromtimestamp(start, UTC)
    year, month = (begun.year, begun.month + 1) if begun.month < 12 else (begun.year + 1, 1)
    return int(datetime(year, month, plan.refill_day, tzinfo=UTC).timestamp())


def is_amount(value: object) -> TypeGuard[int]:
    """Whether *value* is a credit amount (a cost, a balance, a change): an integer from 0
    to :data:`MAX_CREDITS`, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CREDITS


def lease(
    balance: int, stored_period: int, period: int, refill_amount: int | None, cost: int
) -> tuple[int, int, int]:
    """A lease from a stored *balance* of the period *stored_period*, asked in *period*:
    ``(taken, balance after, its period)``. A later period with a refill first sets the
    balance to the refill's amount."""
    if refill_amount is not None and period > stored_period:
        balance, stored_period = refill_amount, period
    taken = lease_size(balance, cost)
    return taken, balance - taken, stored_period


def lease_size(remaining: int, cost: int) -> int:
    """How much one lease takes from a stored balance of *remaining*: a tenth of it (at least
    *cost*, at most :data:`LEASE_CAP` unless *cost* is more), or 0 when it cannot pay *cost*."""
    if cost > remaining:
        return 0
    return min(remaining, max(cost, min(LEASE_CAP, remaining // 10)))


def pool_key(plan: CreditPlan, period: int) -> Pool:
    """Where a process keeps the credits it leased for the key in *period*: per generation
    and period, so that a ``set`` or a refill starts from an empty pool."""
    return (plan.key_id, plan.generation, period)
