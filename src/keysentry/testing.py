"""Helpers for testing code that uses keysentry: a fake clock, an in-memory store, keys.

>>> from keysentry.testing import FakeClock, issue_key, make_sentry
>>> clock = FakeClock()
>>> ks = make_sentry(clock=clock)
>>> issued = issue_key(ks, permissions=["users:read"])
>>> issued.key.app_slug
'test-app'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keysentry.errors import NotFoundError
from keysentry.models import IssuedKey
from keysentry.service import KeySentry
from keysentry.stores.memory import MemoryKeyStore

__all__ = ["FakeClock", "InMemoryKeyStore", "issue_key", "make_sentry"]

#: The in-memory store, under the name tests look for.
InMemoryKeyStore = MemoryKeyStore


class FakeClock:
    """A clock that moves only when told to: pass it as ``clock=`` and call :meth:`advance`.

    Args:
        start: the Unix time it shows first (default: 2023-11-14T22:13:20Z).
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by *seconds* and return the new time."""
        if seconds < 0:
            raise ValueError("a FakeClock does not go backwards")
        self.now += seconds
        return self.now

    def __repr__(self) -> str:
        return f"FakeClock({self.now!r})"


def make_sentry(clock: FakeClock | None = None) -> KeySentry:
    """Return a :class:`KeySentry` on a fresh in-memory store, on *clock* if given."""
    if clock is None:
        return KeySentry(store=InMemoryKeyStore())
    return KeySentry(store=InMemoryKeyStore(), clock=clock)


def issue_key(
    ks: KeySentry,
    *,
    app_slug: str = "test-app",
    key_prefix: str = "sk_test",
    app_permissions: Sequence[str] = ("*",),
    app_resources: Sequence[str] = (),
    permissions: Sequence[str] | None = None,
    name: str = "test key",
    **key_fields: Any,
) -> IssuedKey:
    """Issue a key, creating its app first if there is no live app *app_slug*.

    The app is created granting *app_permissions* (everything, by default) and
    *app_resources*; the remaining keyword arguments go to :meth:`KeySentry.create_api_key`.
    """
    try:
        ks.get_api_auth_app(app_slug)
    except NotFoundError:
        ks.create_api_auth_app(
            app_slug=app_slug,
            name=app_slug,
            key_prefix=key_prefix,
            permissions=list(app_permissions),
            resources=list(app_resources),
        )
    return ks.create_api_key(app_slug, name, permissions=permissions, **key_fields)
