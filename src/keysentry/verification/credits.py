"""Credits spent in this process: leases taken from the store, spent under one lock.

A request with a credit-limited key first takes its cost from the key's *pool* here; only
then are its rate limits counted (in this process or on Redis: still one round trip), and
if they refuse, the cost goes back. So a request refused by a rate limit spends nothing, and
one refused for credits counts against no rate limit. An empty pool takes a lease from the
store (:func:`keysentry.core.credits.lease_size`: a tenth of what is left, at least the
cost, at most 1,000), by a conditional update that never hands out a credit twice, so no key
spends more than it had, whatever the number of workers. What a process holds when it closes
goes back to the store; a crash loses at most its leases (never gives back a spent credit).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from keysentry.core.credits import CreditPlan, Pool

if TYPE_CHECKING:
    from keysentry.stores.base import KeyStore

__all__ = ["STALE", "CreditPools"]

#: What :meth:`CreditPools.lease` answers when the entry's credits are out of date (they
#: were set since it was cached): reload the key.
STALE = -1


class CreditPools:
    """This process's leased credits, per pool (a key's generation and refill period)."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        # pool -> [credits leased here and not spent, what the store had left after the lease]
        self._pools: dict[Pool, list[int]] = {}
        self._lock = threading.Lock()

    def take(self, pool: Pool, cost: int) -> int | None:
        """Take *cost* from the pool: the key's credits left (as this process knows them),
        or ``None`` when the pool holds less than *cost*."""
        with self._lock:
            held = self._pools.get(pool)
            if held is None or held[0] < cost:
                return None
            held[0] -= cost
            return held[0] + held[1]

    def give_back(self, pool: Pool, cost: int) -> None:
        """Return what :meth:`take` took (the rate limits refused the request)."""
        with self._lock:
            self._pools[pool][0] += cost

    def lease(self, plan: CreditPlan, pool: Pool, cost: int) -> int:
        """Take a lease from the store into *pool* (the key's, for its period), enough at
        least for what the pool lacks of *cost*: how much it got (0: the store cannot make
        up the difference), or :data:`STALE`."""
        period = pool[2]
        with self._lock:
            held = self._pools.get(pool)
            lacking = max(cost - (held[0] if held is not None else 0), 0)
        amount = plan.amount if plan.interval is not None else None
        got = self.store.lease_credits(plan.key_id, plan.generation, period, amount, lacking)
        if got is None:
            return STALE
        taken, left = got
        with self._lock:
            held = self._pools.setdefault(pool, [0, left])
            held[0] += taken
            held[1] = left
        return taken

    def drain(self) -> None:
        """Give every unspent lease back to the store (at close)."""
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool, (held, _) in pools.items():
            if held > 0:
                key_id, generation, period = pool
                self.store.return_credits(key_id, generation, period, held)
