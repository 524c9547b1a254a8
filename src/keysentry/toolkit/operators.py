"""Who is an operator: keys of the ``keysentry-admin`` app holding ``keysentry:admin`` (the
admin API's and the dashboard's rule, kept here so neither imports the other)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from keysentry.errors import NotFoundError

if TYPE_CHECKING:
    from keysentry.models import ApiKey
    from keysentry.service import KeySentry

__all__ = ["ADMIN_APP_SLUG", "ADMIN_KEY_PREFIX", "ADMIN_PERMISSION", "VERIFY_PERMISSION",
           "operator_key"]  # fmt: skip

ADMIN_APP_SLUG = "keysentry-admin"
ADMIN_KEY_PREFIX = "ks_admin"
ADMIN_PERMISSION = "keysentry:admin"
VERIFY_PERMISSION = "keysentry:verify"


def operator_key(ks: KeySentry, key_id: str, now: float) -> ApiKey | None:
    """The key, if it is (still) an operator's: of the admin app, live, holding
    ``keysentry:admin``; read from the store, so a revocation counts at once."""
    try:
        key = ks.get_api_key(key_id)
        app = ks.get_api_auth_app(ADMIN_APP_SLUG)
    except NotFoundError:
        return None
    expired = key.expires_at is not None and key.expires_at <= datetime.fromtimestamp(now, UTC)
    valid = (
        key.app_slug == ADMIN_APP_SLUG
        and app.is_active
        and key.is_active
        and key.revoked_at is None
        and not expired
        and ADMIN_PERMISSION in key.permissions
    )
    return key if valid else None
