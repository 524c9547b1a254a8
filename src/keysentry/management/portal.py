"""Portal sessions: a short-lived, single-use link that lets one owner manage their own keys
of one app in the customer portal (:mod:`keysentry.portal`), like Wacht's vanity-page tickets.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import timedelta

from keysentry.errors import FieldError, ValidationError
from keysentry.management._common import ManagementBase, owner_id, require_id, ungranted
from keysentry.models import PORTAL_TTL_RANGE, PortalSession, build
from keysentry.stores.base import Ticket

__all__ = ["PortalSessions", "token_hash"]


def token_hash(token: str) -> str:
    """The stored form of a portal link's token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class PortalSessions(ManagementBase):
    """Minting and spending portal links."""

    def create_portal_session(
        self,
        app_slug: str,
        owner_user_id: str | int,
        *,
        ttl_seconds: int = 900,
        return_url: str | None = None,
        permissions: Sequence[str] | None = None,
        path: str = "/portal",
    ) -> PortalSession:
        """Mint a link to the customer portal for one owner of one app.

        The customer who opens ``.url`` (within *ttl_seconds*, once) sees and manages only
        the keys of *app_slug* whose ``owner_user_id`` is theirs; the keys they create get
        that owner and at most *permissions* (``None``: what the app grants).

        Args:
            app_slug: the app whose keys the customer manages.
            owner_user_id: the customer, as your app knows them.
            ttl_seconds: how long the link is good for (30 s to a day).
            return_url: where the portal's "back" link goes (a path or an http(s) URL).
            permissions: the permissions the customer may give their keys.
            path: where the portal is mounted.

        Raises:
            NotFoundError: no live app has this slug.
            ValidationError: a malformed field, or a permission the app does not grant.
        """
        _check_link(ttl_seconds, path)
        now = self._now()
        token = secrets.token_urlsafe(32)
        session = build(
            PortalSession,
            {
                "id": self._new_id("psn", now),
                "app_slug": app_slug,
                "owner_user_id": owner_user_id,
                "permissions": list(permissions) if isinstance(permissions, tuple) else permissions,
                "return_url": return_url,
                "created_at": now,
                "expires_at": now + timedelta(seconds=ttl_seconds),
                "url": f"{path.rstrip('/')}/t/{token}",
            },
        )
        with self.store.read() as store:
            app = self._live_app(store, session.app_slug)
        if session.permissions is not None:
            _check_granted(app.permissions, session.permissions, app.app_slug)
        self.store.add_ticket(
            Ticket(
                id=session.id,
                token_hash=token_hash(token),
                app_slug=session.app_slug,
                owner_user_id=session.owner_user_id,
                permissions=None if session.permissions is None else tuple(session.permissions),
                return_url=session.return_url,
                created_at=now,
                expires_at=session.expires_at,
            )
        )
        return session

    def end_portal_sessions(self, app_slug: str, owner_user_id: str | int) -> int:
        """Sign one owner out of the customer portal of one app, on every worker: their
        portal sessions end at their next page, and the links minted for them and not yet
        opened open nothing. Do it when you remove the customer: revoking their keys does
        not stop an open portal session from creating new ones.

        Returns:
            How many links were forgotten (0: none was stored, for this slug and owner).

        Raises:
            ValidationError: *app_slug* or *owner_user_id* is not an id.
        """
        slug = require_id(app_slug, "app_slug")
        return self.store.end_tickets(slug, owner_id(owner_user_id))

    def portal_session_in_force(self, session_id: object) -> bool:
        """Whether the portal session with this id (:attr:`PortalSession.id`, once its link
        was opened) may go on; the portal asks on every page. ``False`` once
        :meth:`end_portal_sessions` ended it (or for an id never minted)."""
        try:
            ticket_id = require_id(session_id, "session_id")
        except ValidationError:  # no minted id looks so (PostgreSQL cannot even be asked of NUL)
            return False
        return self.store.ticket_in_force(ticket_id)

    def redeem_portal_link(self, token: str) -> Ticket | None:
        """Spend a portal link's token: its ticket the first time, before it expires;
        ``None`` for an unknown, expired or spent one."""
        if not isinstance(token, str) or not 16 <= len(token) <= 128:
            return None
        return self.store.use_ticket(token_hash(token), self._now())


def _check_link(ttl_seconds: int, path: str) -> None:
    low, high = PORTAL_TTL_RANGE
    if (
        isinstance(ttl_seconds, bool)
        or not isinstance(ttl_seconds, int)
        or not (low <= ttl_seconds <= high)
    ):
        raise ValidationError.single("ttl_seconds", f"must be an integer from {low} to {high}")
    if not isinstance(path, str) or not path.startswith("/") or "?" in path:
        raise ValidationError.single("path", "must be the portal's mount path, like /portal")


def _check_granted(granted: Sequence[str], asked: Sequence[str], app_slug: str) -> None:
    denied = ungranted(granted, asked)
    if denied:
        raise ValidationError(
            [FieldError("permissions", f"{p!r} is not granted by app {app_slug!r}") for p in denied]
        )
