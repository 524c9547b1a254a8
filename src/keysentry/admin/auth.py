"""Who may call the admin API: keys of the ``keysentry-admin`` app, verified by keysentry.

The admin app is an ordinary app in the store. Its keys carry ``keysentry:admin`` (manage
everything) and ``keysentry:verify`` (ask ``/v1/authz/check``); only keys *of this app* count,
so that a customer app granting ``*`` cannot mint admin keys.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from keysentry.core.decision import Decision, Reason
from keysentry.core.pipeline import Policy
from keysentry.errors import ConflictError, NotFoundError
from keysentry.models import IssuedKey
from keysentry.toolkit.facts import scope_facts
from keysentry.toolkit.operators import (
    ADMIN_APP_SLUG,
    ADMIN_KEY_PREFIX,
    ADMIN_PERMISSION,
    VERIFY_PERMISSION,
)
from keysentry.toolkit.render import refusal_response

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = [
    "ADMIN_APP_SLUG",
    "ADMIN_KEY_PREFIX",
    "ADMIN_PERMISSION",
    "VERIFY_PERMISSION",
    "authenticate",
    "create_admin_key",
]


async def authenticate(ks: KeySentry, request: Request, permission: str) -> Response | None:
    """Verify the request's key for *permission*; ``None`` if it may pass, else the refusal.

    The key must belong to the admin app: any other app's key is refused with 403.
    """
    facts, _ = scope_facts(request.scope)
    decision = await ks.averify_request(facts, Policy((permission,), ""))
    if not decision.allowed:
        return refusal_response(decision)
    identity = decision.identity
    if identity is None or identity.app_slug != ADMIN_APP_SLUG:
        detail = f"Only keys of the {ADMIN_APP_SLUG!r} app may call this API."
        return refusal_response(Decision.deny(Reason.PERMISSION_DENIED, identity, detail))
    return None


def create_admin_key(ks: KeySentry, name: str = "admin", *, verify_only: bool = False) -> IssuedKey:
    """Issue a key for the admin API, creating the ``keysentry-admin`` app on first use.

    Args:
        ks: the service whose store the admin API manages.
        name: the key's name.
        verify_only: grant only ``keysentry:verify`` (``/v1/authz/check``), not
            ``keysentry:admin``.

    Returns:
        The key with its secret, shown this once.
    """
    try:
        ks.get_api_auth_app(ADMIN_APP_SLUG)
    except NotFoundError:
        with contextlib.suppress(ConflictError):  # another process created it in between
            ks.create_api_auth_app(
                ADMIN_APP_SLUG,
                "keysentry admin",
                ADMIN_KEY_PREFIX,
                description="Keys for keysentry's admin API (keysentry admin-key create)",
                permissions=[ADMIN_PERMISSION, VERIFY_PERMISSION],
            )
    permissions = [VERIFY_PERMISSION] if verify_only else [ADMIN_PERMISSION, VERIFY_PERMISSION]
    return ks.create_api_key(ADMIN_APP_SLUG, name, permissions=permissions)
