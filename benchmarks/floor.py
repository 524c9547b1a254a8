"""The floor: the least Python that does a cached verification's work in an ASGI middleware.

Not keysentry, and not for use: a hand-written middleware with everything inline, measured
beside ``KeySentryMiddleware`` so that each run shows how close pure Python can come to the
bare app on that machine. Per request it does what a cache hit must: find the
``Authorization`` header, strip ``Bearer``, check the key's length, alphabet and CRC32
checksum, take its SHA-256, look the digest up in a dict, check that the key is usable and
unexpired, check the route's permission (remembered per key and route), count the request
in one sliding-window counter under a lock, and add the five rate-limit headers to the
response through a wrapped ``send``.

What it leaves out, and keysentry does: a copy of the identity carrying this request's
quota, Starlette's ``request.user``/``request.auth``, ``last_used_at``, the cache's TTL,
bounds and cross-process invalidation, path checks (``//``, ``..``), ``X-API-Key``,
preflight and excluded paths, glob patterns, error bodies and every failure mode.
"""

from __future__ import annotations

import threading
import time
import zlib
from typing import Any

from keysentry.core.keys import ALPHABET, sha256  # CPython's own SHA-256, as keysentry's

_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]


class FloorKey:
    """What the floor caches per key."""

    def __init__(self, identity: object, permissions: set[str], limit: int, window_ms: int):
        self.identity = identity
        self.usable = True
        self.expires_at: float | None = None
        self.permissions = permissions
        self.granted: dict[tuple[str, str], bool] = {}
        self.limit = limit
        self.window_ms = window_ms
        # the policy name keysentry gives a per-key rule of one minute (its short form): both
        # answer with the same header bytes, which a server checks byte by byte
        name = f'"{limit}/minute:per_key"'
        self.policy = f"{name};q={limit};w={window_ms // 1000}".encode()
        self.remaining_prefix = f"{name};r=".encode()
        self.limit_bytes = str(limit).encode()
        self.counter = [0, 0, 0]  # window start, count in it, count in the one before


class FloorMiddleware:
    """Verify the bearer key of every HTTP request against *keys* (digest -> FloorKey);
    *required* maps a route prefix to the permission it needs."""

    def __init__(self, app: Any, keys: dict[str, FloorKey], required: dict[str, str]) -> None:
        self.app = app
        self.keys = keys
        self.required = required
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        if authorization is None or not authorization.startswith("Bearer "):
            raise RuntimeError("the floor only measures the valid-key path")
        key = authorization[7:]
        body = key[-38:]
        if len(key) > 71 or key[-39:-38] != "_" or not body.isascii() or not body.isalnum():
            raise RuntimeError("malformed key")
        high, low = divmod(zlib.crc32(key[:-6].encode("ascii")), 3844)
        top, mid = divmod(high, 3844)
        if body[32:] != _PAIRS[top] + _PAIRS[mid] + _PAIRS[low]:
            raise RuntimeError("bad checksum")
        entry = self.keys.get(sha256(key.encode("ascii")).hexdigest())
        now = time.time()
        if entry is None or not entry.usable or (entry.expires_at and now >= entry.expires_at):
            raise RuntimeError("unknown or unusable key")
        method, path = scope["method"], scope["path"]
        granted = entry.granted.get((method, path))
        if granted is None:
            needed = [p for route, p in self.required.items() if path.startswith(route)]
            granted = entry.granted[method, path] = all(p in entry.permissions for p in needed)
        if not granted:
            raise RuntimeError("permission denied")
        now_ms = int(now * 1000)
        length = entry.window_ms
        start = now_ms - now_ms % length
        with self.lock:
            counter = entry.counter
            if counter[0] != start:
                counter[2] = counter[1] if counter[0] + length == start else 0
                counter[0], counter[1] = start, 0
            used = counter[1] * length + counter[2] * (length - (now_ms - start))
            remaining = (entry.limit * length - used) // length - 1
            if remaining < 0:
                raise RuntimeError("rate limited")
            counter[1] += 1
        left = str(remaining).encode()
        reset = str((start + length - now_ms + 999) // 1000).encode()
        extra = [
            (b"ratelimit-policy", entry.policy),
            (b"ratelimit", entry.remaining_prefix + left + b";t=" + reset),
            (b"x-ratelimit-limit", entry.limit_bytes),
            (b"x-ratelimit-remaining", left),
            (b"x-ratelimit-reset", reset),
        ]
        state = scope.get("state")
        if state is None:
            scope["state"] = {"api_key": entry.identity}
        else:
            state["api_key"] = entry.identity

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_floor(app: Any, digest: str) -> None:
    """Put *app* (Starlette) behind the floor as every benchmark measures it: the key whose
    SHA-256 is *digest*, ``users:read`` required under ``/users/``, a quota no run reaches."""
    from benchmarks.world import HUGE

    keys = floor_keys(digest, HUGE)
    app.add_middleware(FloorMiddleware, keys=keys, required={"/users/": "users:read"})


def floor_keys(digest: str, limit: int) -> dict[str, FloorKey]:
    """The floor's cache: the key whose SHA-256 is *digest*, with ``users:read`` and
    *limit* requests a minute."""
    return {digest: FloorKey(object(), {"users:read"}, limit, 60_000)}
