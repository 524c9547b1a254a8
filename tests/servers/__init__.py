#: The permission map of the apps the trust tests serve (tests/servers/wsgi_app.py and its
#: ASGI twin in tests/system/test_trust_servers.py).
from __future__ import annotations

PERMISSIONS = {
    "GET /users/*": ["users:read"],
    "POST /users/*": ["users:write"],
    "DELETE /users/*": ["users:delete"],
}
