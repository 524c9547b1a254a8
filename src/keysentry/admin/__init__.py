"""keysentry's HTTP surfaces: the admin API (Wacht's ``/api-auth/…`` routes) and verification
over HTTP (``/v1/authz/check`` and a forward-auth endpoint for reverse proxies).

::

    from keysentry import KeySentry
    from keysentry.admin import create_admin_app, create_admin_key

    ks = KeySentry("postgresql://…")
    print(create_admin_key(ks).secret)      # once; or `keysentry admin-key create`
    app = create_admin_app(ks)               # an ASGI app: run it, or mount it in yours

Needs only starlette (a core dependency); ``keysentry serve`` runs it under uvicorn.
"""

from __future__ import annotations

from keysentry.admin.app import OPENAPI_PATH, create_admin_app
from keysentry.admin.auth import (
    ADMIN_APP_SLUG,
    ADMIN_KEY_PREFIX,
    ADMIN_PERMISSION,
    VERIFY_PERMISSION,
    create_admin_key,
)
from keysentry.admin.authz import CHECK_PATH, FORWARD_PATH

__all__ = [
    "ADMIN_APP_SLUG",
    "ADMIN_KEY_PREFIX",
    "ADMIN_PERMISSION",
    "CHECK_PATH",
    "FORWARD_PATH",
    "OPENAPI_PATH",
    "VERIFY_PERMISSION",
    "create_admin_app",
    "create_admin_key",
]
