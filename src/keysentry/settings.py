"""Settings that several entry points share: default URLs and where to read them from."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from keysentry.errors import ConfigurationError

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "LIMITER_URL_ENV",
    "check_flag",
    "check_limiter_url",
    "check_seconds",
    "database_url_from_env",
]

#: The store used when none is named: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///./keysentry.db"
#: The environment variable the CLI (and ``keysentry serve``) reads the store URL from.
DATABASE_URL_ENV = "KEYSENTRY_DATABASE_URL"
#: The environment variable ``keysentry serve`` reads the rate-limiter URL from.
LIMITER_URL_ENV = "KEYSENTRY_LIMITER_URL"


def database_url_from_env(
    explicit: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """Resolve the store URL: *explicit*, else ``$KEYSENTRY_DATABASE_URL``, else the default."""
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    return env.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def check_limiter_url(url: str | None) -> str | None:
    """Validate a rate-limiter URL: ``memory://``, or a Redis URL (one server, a Redis
    Cluster, Sentinel: see :mod:`keysentry._redis`).

    Raises:
        ConfigurationError: the URL names another backend, or a malformed Redis URL.
    """
    if url is None:
        return None
    from keysentry._redis import SCHEMES, parse_redis_url

    scheme = url.split(":", 1)[0].lower() if isinstance(url, str) else ""
    if scheme == "memory" and "://" in url:
        return url
    if scheme not in SCHEMES or "://" not in url:
        raise ConfigurationError(
            f"unsupported limiter URL {url!r}: use memory://, redis://host:6379/0, "
            "redis+cluster://host:7000,host:7001 or redis+sentinel://host:26379/SERVICE"
        )
    parse_redis_url(url)
    return url


def check_flag(name: str, value: object) -> bool:
    """*value*, if it is ``True`` or ``False``. A string such as ``"false"`` (read from the
    environment, say) is truthy, and would mean the opposite.

    Raises:
        ConfigurationError: naming *name*.
    """
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False")
    return value


def check_seconds(name: str, value: object, *, zero: bool = False, or_none: bool = False) -> None:
    """Refuse *value* unless it is a finite number of seconds above 0 (from 0 with *zero*),
    or, with *or_none*, ``None``.

    Raises:
        ConfigurationError: naming *name*.
    """
    if value is None and or_none:
        return
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = ">= 0" if zero else "> 0"
        raise ConfigurationError(
            f"{name} must be a finite number of seconds {bound}" + (", or None" if or_none else "")
        )
