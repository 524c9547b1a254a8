"""Run a verification flow: the only code written twice, once sync and once async.

The flow yields effects (:class:`~keysentry.core.pipeline.LookupKey`, then maybe
:class:`~keysentry.core.pipeline.Hit`). ``fast`` answers without I/O (the key cache, the
in-process limiter) or returns ``MISS``; ``slow`` does the I/O (the store, a remote limiter).
The async driver sends only the slow call to a worker thread, so a cache hit never leaves the
event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keysentry.core.decision import Decision
from keysentry.core.pipeline import Effect, Flow
from keysentry.stores.cached import MISS

Fast = Callable[[Effect], Any]
Slow = Callable[[Effect], Any]


def run_sync(flow: Flow, fast: Fast, slow: Slow) -> Decision:
    """Drive *flow* to its decision, doing I/O in this thread."""
    try:
        effect = next(flow)
        while True:
            result = fast(effect)
            if result is MISS:
                result = slow(effect)
            effect = flow.send(result)
    except StopIteration as stop:
        decision: Decision = stop.value
        return decision


_to_thread: Any = None


async def run_async(flow: Flow, fast: Fast, slow: Slow) -> Decision:
    """Drive *flow* to its decision; store I/O runs in a worker thread."""
    global _to_thread  # resolved once: an import statement costs on every call
    try:
        effect = next(flow)
        while True:
            result = fast(effect)
            if result is MISS:
                if _to_thread is None:
                    from anyio import to_thread  # starlette's dependency; sync callers skip it

                    _to_thread = to_thread.run_sync
                result = await _to_thread(slow, effect)
            effect = flow.send(result)
    except StopIteration as stop:
        decision: Decision = stop.value
        return decision
