"""Apps: the containers that own keys and cap what their keys may be granted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keysentry.errors import ConflictError, FieldError, ValidationError
from keysentry.management._common import (
    APP_UPDATABLE,
    GRANTED_FIELDS,
    ManagementBase,
    networks_outside,
    scheme_rules,
    ungranted,
    update_fields,
)
from keysentry.models import ApiAuthApp, build
from keysentry.stores.base import StoreSession

__all__ = ["AppManagement"]


class AppManagement(ManagementBase):
    """Create, read, update and delete apps."""

    def create_api_auth_app(
        self,
        app_slug: str,
        name: str,
        key_prefix: str,
        *,
        description: str | None = None,
        is_active: bool = True,
        permissions: Sequence[str] | None = None,
        resources: Sequence[str] | None = None,
        rate_limit_scheme_slug: str | None = None,
        user_id: str | int | None = None,
        organization_id: str | int | None = None,
        workspace_id: str | int | None = None,
        allowed_ips: Sequence[str] | None = None,
    ) -> ApiAuthApp:
        """Create an API auth app: the container that owns keys.

        ``permissions`` and ``resources`` are glob patterns (``users:*``, ``users/*``) that
        cap what the app's keys may be granted. When ``user_id`` is set they must be empty
        (Wacht's rule). ``allowed_ips`` (addresses and CIDR networks, IPv4 and IPv6) limits
        where the app's keys may be used from; none: anywhere.

        Raises:
            ValidationError: a field is malformed, or the scheme does not exist.
            ConflictError: a live app already has this ``app_slug``.
        """
        now = self._now()
        app = build(
            ApiAuthApp,
            {
                "id": self._new_id("app", now),
                "app_slug": app_slug,
                "name": name,
                "key_prefix": key_prefix,
                "description": description,
                "is_active": is_active,
                "permissions": permissions or [],
                "resources": resources or [],
                "rate_limit_scheme_slug": rate_limit_scheme_slug,
                "user_id": user_id,
                "organization_id": organization_id,
                "workspace_id": workspace_id,
                "allowed_ips": list(allowed_ips) if isinstance(allowed_ips, tuple) else allowed_ips,
                "created_at": now,
                "updated_at": now,
            },
        )
        self.usage.flush()  # so that a deleted app's counts made here go before the slug's reuse
        with self.store.write() as session:
            if session.get_app(app.app_slug) is not None:
                raise ConflictError(f"an app {app.app_slug!r} already exists", field="app_slug")
            rules = scheme_rules(session, app.rate_limit_scheme_slug, "rate_limit_scheme_slug")
            session.forget_usage(app.app_slug)  # a deleted app's, counted after its deletion
            session.add_app(app)
            session.append_event("app.created", now, app_slug=app.app_slug)
        return app.model_copy(update={"rate_limits": rules})

    def list_api_auth_apps(self) -> list[ApiAuthApp]:
        """Return the live apps, oldest first, each with its resolved ``rate_limits``."""
        with self.store.read() as session:
            schemes = {s.slug: list(s.rules) for s in session.list_schemes()}
            apps = session.list_apps()
        return [
            a.model_copy(update={"rate_limits": schemes.get(a.rate_limit_scheme_slug or "", [])})
            for a in apps
        ]

    def get_api_auth_app(self, app_slug: str) -> ApiAuthApp:
        """Return the live app with this slug.

        Raises:
            NotFoundError: no live app has this slug.
        """
        with self.store.read() as session:
            app = self._live_app(session, app_slug)
            rules = scheme_rules(session, app.rate_limit_scheme_slug, "rate_limit_scheme_slug")
        return app.model_copy(update={"rate_limits": rules})

    def update_api_auth_app(self, app_slug: str, /, **fields: Any) -> ApiAuthApp:
        """Change some of an app's fields; the others keep their values.

        ``app_slug`` cannot change. Narrowing ``permissions`` is refused while a live key
        holds a permission the new list would no longer grant.

        Raises:
            NotFoundError: no live app has this slug.
            ValidationError: an unknown, immutable or malformed field.
        """
        changes = update_fields(fields, APP_UPDATABLE)
        now = self._now()
        with self.store.write() as session:
            current = self._live_app(session, app_slug)
            data = current.model_dump(exclude={"rate_limits"}) | changes | {"updated_at": now}
            app = build(ApiAuthApp, data)
            rules = scheme_rules(session, app.rate_limit_scheme_slug, "rate_limit_scheme_slug")
            if "permissions" in changes or "allowed_ips" in changes:
                self._check_keys_still_fit(session, app, changes)
            session.save_app(app)
            session.append_event("app.updated", now, app_slug=app.app_slug)
        self.cache.evict_app(app.app_slug, announce=True)
        return app.model_copy(update={"rate_limits": rules})

    def delete_api_auth_app(self, app_slug: str) -> ApiAuthApp:
        """Soft-delete an app. Its keys stop verifying at once and its usage is deleted; its
        slug may be reused by a new app, whose keys and usage are unrelated.

        Raises:
            NotFoundError: no live app has this slug.
        """
        now = self._now()
        with self.store.write() as session:
            app = self._live_app(session, app_slug)
            app = app.model_copy(update={"deleted_at": now, "updated_at": now})
            session.save_app(app)
            session.forget_usage(app.app_slug)
            session.append_event("app.deleted", now, app_slug=app.app_slug)
        self.cache.evict_app(app.app_slug, announce=True)
        return app

    @staticmethod
    def _check_keys_still_fit(
        session: StoreSession, app: ApiAuthApp, changes: dict[str, Any]
    ) -> None:
        """Refuse new ``permissions`` that would no longer grant what a live key holds, and
        new ``allowed_ips`` that would no longer contain a live key's (one read of the keys,
        every misfit named)."""
        errors = []
        for k in session.list_keys(app.id):
            if k.revoked_at is not None:
                continue
            if "permissions" in changes:
                errors += [
                    FieldError("permissions", f"would no longer grant {p!r}, held by key {k.id!r}")
                    for field in GRANTED_FIELDS
                    for p in ungranted(app.permissions, getattr(k, field))
                ]
            if "allowed_ips" in changes:
                errors += [
                    FieldError("allowed_ips",
                               f"would no longer contain {n!r}, allowed to key {k.id!r}")
                    for n in networks_outside(k.allowed_ips, app.allowed_ips)
                ]  # fmt: skip
        if errors:
            raise ValidationError(errors)
