"""keysentry: issue API keys to your customers and verify them in-process.

>>> from keysentry import KeySentry
>>> ks = KeySentry("memory://")
>>> app = ks.create_api_auth_app(app_slug="internal-api", name="Internal API",
...                              key_prefix="sk_live", permissions=["users:*"])
>>> issued = ks.create_api_key("internal-api", name="Primary", permissions=["users:read"])
>>> issued.secret.startswith("sk_live_")
True

Importing this package loads neither SQLAlchemy nor redis, psycopg, starlette, werkzeug,
flask or fastapi: backends and adapters (``keysentry.asgi``, ``keysentry.wsgi``,
``keysentry.fastapi``, ``keysentry.flask``) import what they need when they are imported.
"""

from __future__ import annotations

from keysentry.core.decision import Decision, Identity, Reason
from keysentry.errors import (
    ConfigurationError,
    ConflictError,
    FieldError,
    KeyFormatError,
    KeySentryError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from keysentry.models import (
    ApiAuthApp,
    ApiKey,
    CreditRefill,
    Event,
    IssuedKey,
    PortalSession,
    RateLimitRule,
    RateLimitScheme,
)
from keysentry.service import KeySentry

__version__ = "0.1.0"

__all__ = [
    "ApiAuthApp",
    "ApiKey",
    "ConfigurationError",
    "ConflictError",
    "CreditRefill",
    "Decision",
    "Event",
    "FieldError",
    "Identity",
    "IssuedKey",
    "KeyFormatError",
    "KeySentry",
    "KeySentryError",
    "NotFoundError",
    "PortalSession",
    "RateLimitRule",
    "RateLimitScheme",
    "Reason",
    "StoreError",
    "ValidationError",
    "__version__",
]
