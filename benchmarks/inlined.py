"""keysentry's one-step path written as one function: what the module structure costs.

Not for use: a measuring stick beside ``benchmarks/floor.py``. ``InlinedMiddleware`` is
``KeySentryMiddleware`` whose usual request (a route seen before, one ``Authorization:
Bearer`` header, a plain key fresh in the cache, one rule on the in-process limiter) runs in
a single coroutine: the same checks, the same per-request copy of the identity, the same
usage count, the same ``request.user``/``request.auth`` and the same header bytes as
keysentry, with no function call of keysentry's own between them (``judge`` and
``Identity.with_rate_limits`` aside). Every other request, and any step that would go another
way (a verdict not yet remembered, a counter not in its window), is handed to
``KeySentryMiddleware`` itself.

So three rows tell the gap apart: bare to the floor is the least a pure-Python middleware
costs; the floor to this is what keysentry's features add (freshness, usage counts, Starlette's
user, the identity copy); this to ``KeySentryMiddleware`` is what one job per module costs
(about ten calls a request). It reads keysentry's private attributes, so
tests/system/test_benchmarks.py checks that it still takes its own path and answers what
keysentry answers.
"""

from __future__ import annotations

from typing import Any

from keysentry.asgi import KeySentryMiddleware
from keysentry.core.decision import Reason
from keysentry.core.headers import _SECONDS, _seconds_bytes
from keysentry.core.keys import MAX_KEY_LENGTH, sha256
from keysentry.core.ratelimit import judge
from keysentry.limiters.memory import MemoryLimiter
from keysentry.stores.usage import ADMITTED_MAX
from keysentry.toolkit.identity import _attached

_OK = Reason.OK


class InlinedMiddleware:
    """``KeySentryMiddleware`` with its one-step path in one function (see the module); it
    hands every other request to a ``KeySentryMiddleware`` of the same options (held, not
    inherited: the compiled build's classes cannot be subclassed in Python)."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.app = app
        self.keysentry = KeySentryMiddleware(app, **options)
        self._routes = self.keysentry._routes
        verifier = self.keysentry.sentry.verifier
        limiter = verifier.limiter
        self.cache, self.usage, self.clock = verifier.cache, verifier.usage, verifier.clock
        # None: every request goes to KeySentryMiddleware, which counts on Redis, notes usage
        # without analytics and tells the metrics, none of which this function does
        memory = limiter if isinstance(limiter, MemoryLimiter) else None
        self.limiter = memory if verifier.usage.analytics and verifier.metrics is None else None
        self.taken = 0  # requests this function decided itself (the tests read it)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.keysentry(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        policy = self._routes.get((method, path))
        limiter = self.limiter
        if (policy is None or limiter is None or method == "OPTIONS" or scope.get("root_path")
                or "//" in path or "." in path):  # fmt: skip
            await self.keysentry(scope, receive, send)
            return
        credential = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if credential is not None:
                    credential = None
                    break
                credential = value
        if (credential is None or not credential.startswith(b"Bearer ")
                or len(credential) > MAX_KEY_LENGTH + 7):  # fmt: skip
            await self.keysentry(scope, receive, send)
            return
        digest = sha256(credential[7:]).hexdigest()
        now = self.clock()
        cache = self.cache
        fresh = cache._fresh.get(digest) if cache._sync_from <= now < cache._next_sync else None
        if fresh is None or not 0.0 <= now - fresh[1] < cache._ttl:
            await self.keysentry(scope, receive, send)
            return
        entry = fresh[0]
        resource = policy.resource
        asked = (policy.permissions, resource, path if resource is None else "")
        verdict = entry.verdicts.get(asked)
        checks = entry.checks
        if (not entry.plain or entry.digest != digest
                or (entry.expires_at is not None and now >= entry.expires_at)
                or verdict is None or not verdict.allowed
                or checks is None or len(checks) != 1):  # fmt: skip
            await self.keysentry(scope, receive, send)
            return
        auth = _attached.get(entry.identity.grants)
        if auth is None:
            await self.keysentry(scope, receive, send)
            return
        ((limit, counter_key),) = checks
        now_ms = int(now * 1000)
        lock = limiter._lock
        outcome = None
        lock.acquire()
        try:
            counter = limiter._counters.get(counter_key)
            if counter is not None and counter[0] <= now_ms < counter[1]:
                start, end, current, previous = counter
                outcome = judge(limit, current, previous, now_ms - start, end - start)
                if outcome.allowed:
                    counter[2] = current + 1
        finally:
            lock.release()
        if outcome is None or not outcome.allowed:
            await self.keysentry(scope, receive, send)  # counted there, not here
            return
        identity = entry.identity.with_rate_limits((outcome,))
        usage = self.usage
        found = usage.admitted.get(identity.key_id)
        if found is not None and found[0] <= now < found[1] and len(found[2]) < ADMITTED_MAX:
            found[2].append(now)
        else:  # the key's first admitted request of the minute: note() makes its list
            usage.note(_OK, identity, "", now)
        state = scope.get("state")
        if state is None:
            scope["state"] = {"api_key": identity}
        else:
            state["api_key"] = identity
        scope["auth"], scope["user"] = auth
        left = b"%d" % outcome.remaining
        seconds = -(-outcome.reset_ms // 1000)
        resets = _SECONDS.get(seconds) or _seconds_bytes(seconds)
        extra = [
            limit.raw_policy_header,
            (b"ratelimit", limit.raw_remaining_prefix + left + b";t=" + resets),
            limit.raw_limit_header,
            (b"x-ratelimit-remaining", left),
            (b"x-ratelimit-reset", resets),
        ]
        self.taken += 1

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
