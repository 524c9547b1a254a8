"""keysentry: issue API keys to your customers and verify them in-process.

>>> from keysentry import KeySentry
>>> ks = KeySentry("memory://")
>>> app = ks.create_api_auth_app(app_slug="internal-api", name="Internal API",
...                              key_prefix="sk_live", permissions=["users:*"])
>>> issued = ks.create_api_key("internal-api", name="Primary", permissions=["users:read"])
>>> issued.secret.startswith("sk_live_")
True

Importing this package loads neither SQLAlchemy's database drivers nor redis, psycopg,
starlette, werkzeug, flask or fastapi: backends and adapters import what they need lazily.
"""

from __future__ import annotations

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
    Event,
    IssuedKey,
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
    "Event",
    "FieldError",
    "IssuedKey",
    "KeyFormatError",
    "KeySentry",
    "KeySentryError",
    "NotFoundError",
    "RateLimitRule",
    "RateLimitScheme",
    "StoreError",
    "ValidationError",
    "__version__",
]
