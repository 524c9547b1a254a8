"""Settings that several entry points share: default URLs and where to read them from."""

from __future__ import annotations

import os
from collections.abc import Mapping

from keysentry.errors import ConfigurationError

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "LIMITER_URL_ENV",
    "check_limiter_url",
    "database_url_from_env",
]

#: The store used when none is named: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///./keysentry.db"
#: The environment variable the CLI (and ``keysentry serve``) reads the store URL from.
DATABASE_URL_ENV = "KEYSENTRY_DATABASE_URL"
#: The environment variable ``keysentry serve`` reads the rate-limiter URL from.
LIMITER_URL_ENV = "KEYSENTRY_LIMITER_URL"

_LIMITER_SCHEMES = ("memory", "redis", "rediss", "unix")


def database_url_from_env(
    explicit: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """Resolve the store URL: *explicit*, else ``$KEYSENTRY_DATABASE_URL``, else the default."""
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    return env.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def check_limiter_url(url: str | None) -> str | None:
    """Validate a rate-limiter URL (``memory://``, ``redis://…``, ``rediss://…``).

    Raises:
        ConfigurationError: the URL names another backend.
    """
    if url is None:
        return None
    scheme = url.split(":", 1)[0].lower() if isinstance(url, str) else ""
    if scheme not in _LIMITER_SCHEMES or "://" not in url:
        raise ConfigurationError(
            f"unsupported limiter URL {url!r}: use memory:// or redis://host:6379/0"
        )
    return url
