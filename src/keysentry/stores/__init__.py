"""Key stores: where apps, schemes, keys and events live. Pick one by URL.

``memory://`` (tests, demos), ``sqlite:///path.db`` (the default, no server) and
``postgresql://…`` (many processes and machines; ``pip install 'keysentry[postgres]'``).
"""

from __future__ import annotations

from keysentry.errors import ConfigurationError
from keysentry.stores.base import SCHEMA_VERSION, KeyStore, StoreSession
from keysentry.stores.memory import MemoryKeyStore

__all__ = ["SCHEMA_VERSION", "KeyStore", "MemoryKeyStore", "StoreSession", "store_from_url"]


def store_from_url(url: str) -> KeyStore:
    """Return the store a URL names.

    Args:
        url: ``memory://``, ``sqlite:///path.db``, ``sqlite://`` (SQLite in memory),
            ``postgresql://user@host:5432/db`` (also ``postgres://`` and
            ``postgresql+psycopg://``).

    Raises:
        ConfigurationError: the URL is empty or names an unsupported backend, or the
            backend's driver is not installed.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("database URL must be a non-empty string")
    if url.split(":", 1)[0].lower() == "memory":
        return MemoryKeyStore()
    # every other URL is SQL's to judge (keysentry.stores._sql_engines, the one dispatch);
    # SQLAlchemy is imported here, not at package import: memory:// needs none of it
    from keysentry.stores.sql import SQLKeyStore

    return SQLKeyStore(url)
