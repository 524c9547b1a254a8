"""Rate-limit schemes: named lists of rules that apps and keys refer to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keysentry.errors import ConflictError
from keysentry.management._common import SCHEME_UPDATABLE, ManagementBase, update_fields
from keysentry.models import RateLimitRule, RateLimitScheme, build

__all__ = ["SchemeManagement"]


class SchemeManagement(ManagementBase):
    """Create, read, update and delete rate-limit schemes."""

    def create_rate_limit_scheme(
        self,
        slug: str,
        name: str,
        rules: Sequence[RateLimitRule | Mapping[str, Any]],
        *,
        description: str | None = None,
    ) -> RateLimitScheme:
        """Create a named list of rate-limit rules that apps and keys can refer to.

        Raises:
            ValidationError: a malformed field or rule (named like ``rules.0.duration``).
            ConflictError: a scheme with this slug exists.
        """
        now = self._now()
        scheme = build(
            RateLimitScheme,
            {
                "slug": slug,
                "name": name,
                "description": description,
                "rules": rules,
                "created_at": now,
                "updated_at": now,
            },
        )
        with self.store.write() as session:
            if session.get_scheme(scheme.slug) is not None:
                raise ConflictError(f"a scheme {scheme.slug!r} already exists", field="slug")
            session.add_scheme(scheme)
            session.append_event("scheme.created", now, scheme_slug=scheme.slug)
        return scheme

    def list_rate_limit_schemes(self) -> list[RateLimitScheme]:
        """Return every scheme, oldest first."""
        with self.store.read() as session:
            return session.list_schemes()

    def get_rate_limit_scheme(self, slug: str) -> RateLimitScheme:
        """Return the scheme with this slug.

        Raises:
            NotFoundError: there is none.
        """
        with self.store.read() as session:
            return self._scheme(session, slug)

    def update_rate_limit_scheme(self, slug: str, /, **fields: Any) -> RateLimitScheme:
        """Change a scheme's ``name``, ``description`` or ``rules``; takes effect for every
        app and key that uses it.

        Raises:
            NotFoundError: no such scheme.
            ValidationError: an unknown or malformed field.
        """
        changes = update_fields(fields, SCHEME_UPDATABLE)
        now = self._now()
        with self.store.write() as session:
            current = self._scheme(session, slug)
            scheme = build(RateLimitScheme, current.model_dump() | changes | {"updated_at": now})
            session.save_scheme(scheme)
            session.append_event("scheme.updated", now, scheme_slug=scheme.slug)
        self.cache.clear(announce=True)
        return scheme

    def delete_rate_limit_scheme(self, slug: str) -> RateLimitScheme:
        """Delete a scheme that no live app and no unrevoked key uses.

        Raises:
            NotFoundError: no such scheme.
            ConflictError: the scheme is still in use; the message names the users.
        """
        now = self._now()
        with self.store.write() as session:
            scheme = self._scheme(session, slug)
            users = session.scheme_users(scheme.slug)
            if users:
                raise ConflictError(
                    f"scheme {slug!r} is still used by {', '.join(users)}", field="slug"
                )
            session.remove_scheme(scheme.slug)
            session.append_event("scheme.deleted", now, scheme_slug=scheme.slug)
        self.cache.clear(announce=True)
        return scheme
