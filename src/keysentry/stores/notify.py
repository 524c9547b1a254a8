"""Cache invalidations over Redis pub/sub: a change made in one process reaches the caches
of every other process within milliseconds (docs/design.md §7).

The event log stays the source of truth: every process still reads it every
``sync_interval``, so a message lost while Redis was unreachable (pub/sub does not keep
messages) delays an eviction by at most that interval. Publishing never fails a management
call: if Redis cannot be reached, the change is logged and travels by the event log alone.

Fork-safe: the subscriber thread and its connection are made by the first lookup in each
process (:meth:`RedisChanges.ensure_running`), never inherited across a fork.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any

from keysentry._redis import close_client  # imports no redis until a client is made

__all__ = ["CHANNEL", "RedisChanges", "changes_from_url", "channel_name"]

logger = logging.getLogger("keysentry")
CHANNEL = "keysentry:changes"
"""The channel's name before :func:`channel_name` adds the database number."""


def channel_name(url: str, namespace: str = "keysentry") -> str:
    """The invalidation channel of the deployment that uses *namespace* on the database of
    *url*: ``keysentry:changes:0``. Redis pub/sub ignores database numbers (a message
    published on db 1 reaches subscribers on db 0), so the number is in the name."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)  # redis://host:6379/2, unix:///run/redis.sock?db=2
    database = parse_qs(parts.query).get("db", [""])[0]
    if not database and parts.scheme != "unix":
        database = parts.path.strip("/")
    return f"{namespace}:changes:{database or 0}"


Apply = Callable[[str, str], None]
"""Called with ``("key", key_id)``, ``("app", app_slug)`` or ``("all", "")``."""


class RedisChanges:
    """Publish this process's changes and apply everybody else's.

    Args:
        url: the Redis URL (the limiter's).
        channel: the pub/sub channel; processes sharing a store must share it, and only
            they (default: :func:`channel_name` of *url*).
        timeout: seconds to wait for Redis when publishing or connecting.
    """

    def __init__(self, url: str, *, channel: str | None = None, timeout: float = 1.0) -> None:
        self.url = url
        self.channel = channel_name(url) if channel is None else channel
        self.timeout = timeout
        self._origin = secrets.token_hex(8)  # our own messages are already applied
        self._apply: Apply | None = None
        self._on_reconnect: Callable[[], None] | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._publisher: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0
        """Messages applied so far (for tests and monitoring)."""
        self.subscribed = False
        """Whether the subscriber is listening (it was, at least, when last connected)."""

    def attach(self, apply: Apply, on_reconnect: Callable[[], None]) -> None:
        """Where messages go, and what to do after (re)subscribing (read the event log:
        messages published while we were not listening are lost)."""
        self._apply = apply
        self._on_reconnect = on_reconnect

    def _redis(self, **options: Any) -> Any:
        from keysentry._redis import parse_redis_url, pubsub_client

        target = parse_redis_url(self.url)
        return pubsub_client(target, socket_connect_timeout=self.timeout, **options)

    def publish(self, kind: str, ident: str = "") -> None:
        """Tell the other processes that *kind* (``key``, ``app``, ``all``) *ident* changed."""
        import redis

        try:
            self._send(f"{kind} {ident}")
        except redis.RedisError as exc:
            logger.warning(
                "keysentry: could not publish a cache invalidation (%s %s); other processes "
                "will see it through the event log: %s", kind, ident, exc,
            )  # fmt: skip

    def _send(self, message: str) -> None:
        """Publish *message*, marked as ours, on a connection of this process."""
        with self._lock:
            if self._publisher is None or self._pid_changed():
                self._publisher = self._redis(socket_timeout=self.timeout)
            publisher = self._publisher
        publisher.publish(self.channel, f"{self._origin} {message}")

    def _pid_changed(self) -> bool:
        return self._pid != os.getpid()

    def ensure_running(self) -> None:
        """Start the subscriber thread in this process, if it is not running yet."""
        if self._thread is not None and not self._pid_changed():
            return
        with self._lock:
            if self._thread is not None and not self._pid_changed():
                return
            self._pid = os.getpid()
            self._publisher = None  # a connection inherited through fork is not ours
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._listen, name="keysentry-invalidations", daemon=True
            )
            self._thread.start()

    def _listen(self) -> None:
        import redis

        stop = self._stop
        backoff = 0.1
        while not stop.is_set():
            client = pubsub = None
            try:
                # no read timeout: the subscriber waits for messages; health checks (PING
                # every 15 s) find a dead connection.
                client = self._redis(socket_timeout=None, health_check_interval=15)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.subscribed = True
                if self._on_reconnect is not None:
                    self._on_reconnect()
                backoff = 0.1
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._handle(message.get("data"))
            except (redis.RedisError, OSError) as exc:
                self.subscribed = False  # not while waiting to reconnect: close() need not wake it
                logger.warning("keysentry: invalidation channel lost, reconnecting: %s", exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if pubsub is not None:
                    pubsub.close()
                if client is not None:
                    close_client(client)

    def _wake(self) -> None:
        """Send the subscriber a message it ignores, so that it sees it was stopped now
        rather than at its next half-second poll (every process ignores the kind)."""
        import redis

        with contextlib.suppress(redis.RedisError):  # then it stops at its next poll
            self._send("stop")

    def _handle(self, data: object) -> None:
        if not isinstance(data, bytes):
            return
        origin, _, rest = data.decode("utf-8", "replace").partition(" ")
        kind, _, ident = rest.partition(" ")
        if origin == self._origin or self._apply is None or kind not in ("key", "app", "all"):
            return
        self._apply(kind, ident)
        self.received += 1

    def close(self) -> None:
        """Stop the subscriber and close the connections."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            if self.subscribed:
                self._wake()
            thread.join(2)
        with self._lock:
            if self._publisher is not None:
                close_client(self._publisher)
                self._publisher = None


def changes_from_url(
    url: str | None, namespace: str = "keysentry", timeout: float = 0.1
) -> RedisChanges | None:
    """The invalidation channel for a limiter URL: on Redis, its pub/sub; else none."""
    if url is None or url.startswith("memory:"):
        return None
    return RedisChanges(url, channel=channel_name(url, namespace), timeout=max(timeout, 1.0))
