"""Where a verified identity goes: ``request.state.api_key`` and Starlette's
``scope["auth"]`` / ``scope["user"]`` in ASGI, ``environ["keysentry.api_key"]`` in WSGI."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.authentication import AuthCredentials, BaseUser

from keysentry.core.decision import Identity
from keysentry.core.patterns import Grants
from keysentry.types import Scope

__all__ = ["ENVIRON_KEY", "ApiKeyUser", "PermissionScopes", "attach", "attach_environ"]

#: Where the identity of a verified request is put in the WSGI environ.
ENVIRON_KEY = "keysentry.api_key"


class PermissionScopes(list[str]):
    """The key's permission patterns; ``"users:read" in scopes`` matches by glob."""

    def __init__(self, identity: Identity) -> None:
        super().__init__(identity.permissions)
        self._identity = identity

    def __contains__(self, permission: object) -> bool:
        return isinstance(permission, str) and self._identity.has_permission(permission)


class ApiKeyUser(BaseUser):
    """Starlette's ``request.user`` for a request made with an API key: one per key, shared
    by its requests. Its ``api_key`` is the key's identity without any one request's
    ``rate_limits`` or ``credits_remaining``; ``request.state.api_key`` has those."""

    def __init__(self, identity: Identity) -> None:
        self.api_key = identity

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.api_key.key_name

    @property
    def identity(self) -> str:
        return self.api_key.key_id


def _credentials(identity: Identity) -> AuthCredentials:
    credentials = AuthCredentials()
    credentials.scopes = PermissionScopes(identity)  # AuthCredentials copies to a plain list
    return credentials


# Starlette's auth objects for each key, built once. They are keyed by the identity's
# compiled permissions (hashed by identity, not value), which every per-request copy of one
# cached identity shares and which a changed key's new identity replaces: a changed key is
# a new entry, and a stale one is never found again (the table is cleared when full).
_attached: dict[Grants, tuple[AuthCredentials, ApiKeyUser]] = {}
_ATTACHED_MAX = 10_000


def _starlette_auth(identity: Identity) -> tuple[AuthCredentials, ApiKeyUser]:
    if len(_attached) >= _ATTACHED_MAX:
        _attached.clear()
    # one user for all the key's requests: it carries no request's own outcomes
    user = ApiKeyUser(replace(identity, rate_limits=(), credits_remaining=None))
    auth = _attached[identity.grants] = (_credentials(identity), user)
    return auth


def attach(scope: Scope, identity: Identity) -> None:
    """Put a verified identity where Starlette, FastAPI and ``ks.require`` look for it."""
    auth = _attached.get(identity.grants)
    if auth is None:
        auth = _starlette_auth(identity)
    state = scope.get("state")
    if state is None:
        scope["state"] = {"api_key": identity}
    else:
        state["api_key"] = identity
    scope["auth"], scope["user"] = auth


def attach_environ(environ: dict[str, Any], identity: Identity) -> None:
    """Put a verified identity where ``current_api_key`` and ``ks.require`` look for it."""
    environ[ENVIRON_KEY] = identity
