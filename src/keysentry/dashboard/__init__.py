"""The operator dashboard: apps, schemes, keys, usage and the audit log in a browser.

Mount it (``Mount("/dashboard", create_dashboard_app(ks))``) or run ``keysentry serve``,
which serves it at ``/dashboard/``. Operators sign in with an admin key (``keysentry
admin-key create``): a key of the ``keysentry-admin`` app holding ``keysentry:admin``. The
session cookie holds the key's id, never its secret, and every page checks the key again,
so revoking it signs its sessions out. Every change goes through the same
:class:`~keysentry.KeySentry` calls as the API and the CLI, with the same field errors.
Needs the ``web`` extra (``pip install 'keysentry[web]'``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keysentry._cli_format import _rule_text
from keysentry.errors import ValidationError
from keysentry.models import ApiKey, IssuedKey
from keysentry.toolkit.operators import ADMIN_APP_SLUG, ADMIN_PERMISSION, operator_key
from keysentry.web.pages import Form, Pages, View, check_site, cookie_secret
from keysentry.web.views import (
    GRACES,
    RANGES,
    field_errors,
    grace_seconds,
    key_status,
    split_list,
    usage_chart,
)

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = ["create_dashboard_app"]

PAGE_SIZE = 50
STALE_AFTER = timedelta(days=30)
STATUS_FILTERS = ("all", "active", "revoked", "expired", "stale")


def create_dashboard_app(
    ks: KeySentry,
    *,
    secret_key: str | None = None,
    session_seconds: int = 8 * 3600,
    title: str = "keysentry",
) -> Starlette:
    """The dashboard as an ASGI app.

    Args:
        ks: the service to manage.
        secret_key: signs the session cookies; default ``$KEYSENTRY_SECRET_KEY``, else a
            secret kept in the store (the same for every worker on that store).
        session_seconds: how long a sign-in lasts without use (60 seconds to a week).
        title: the name in the header.

    Raises:
        ConfigurationError: a short *secret_key*, a *session_seconds* out of range or a
            *title* that is not a string.
    """
    check_site(title, session_seconds, longest=7 * 86_400)
    pages = Pages("dashboard", cookie_secret(ks, secret_key), max_age=session_seconds,
                  globals={"site_title": title, "logo_url": None,
                           "layout": "dashboard/layout.html",
                           "key_status": key_status, "rule_text": _rule_text,
                           "operator": None, "section": ""})  # fmt: skip
    views = _Views(ks, pages)
    page, gate = pages.page, views.signed_in
    routes = [
        Route("/", page(gate(views.apps)), methods=["GET", "HEAD"]),
        Route("/login", page(views.login_form), methods=["GET", "HEAD"]),
        Route("/login", page(views.login, form=True), methods=["POST"]),
        Route("/logout", page(views.logout, form=True), methods=["POST"]),
        Route("/apps/new", page(gate(views.new_app)), methods=["GET", "HEAD"]),
        Route("/apps", page(gate(views.create_app), form=True), methods=["POST"]),
        Route("/apps/{app_slug}", page(gate(views.app)), methods=["GET", "HEAD"]),
        Route("/apps/{app_slug}/keys", page(gate(views.create_key), form=True), methods=["POST"]),
        Route("/keys/{key_id}", page(gate(views.key)), methods=["GET", "HEAD"]),
        Route("/keys/{key_id}/revoke", page(gate(views.revoke), form=True), methods=["POST"]),
        Route("/keys/{key_id}/rotate", page(gate(views.rotate), form=True), methods=["POST"]),
        Route("/schemes", page(gate(views.schemes)), methods=["GET", "HEAD"]),
        Route("/events", page(gate(views.events)), methods=["GET", "HEAD"]),
        pages.static_route({"theme.css": ("text/css; charset=utf-8", "")}),
    ]
    return Starlette(routes=routes)


#: A page for operators: the request, its form, and the signed-in operator's key.
OperatorView = Callable[[Request, "Form | None", ApiKey], Response]


class _Views:
    """The pages; each runs in a worker thread with the request and its form."""

    def __init__(self, ks: KeySentry, pages: Pages) -> None:
        self.ks = ks
        self.pages = pages

    # ------------------------------------------------------------ signing in
    def _operator(self, request: Request) -> ApiKey | None:
        key_id = self.pages.session(request).get("operator")
        if not isinstance(key_id, str):
            return None
        return operator_key(self.ks, key_id, self.ks._clock())

    def _render(
        self, request: Request, template: str, operator: ApiKey | None, status: int = 200,
        **context: Any,
    ) -> Response:  # fmt: skip
        return self.pages.render(request, f"dashboard/{template}",
                                 {"operator": operator, **context}, status)  # fmt: skip

    def signed_in(self, view: OperatorView) -> View:
        """*view* for operators only: anyone else is sent to sign in (the key is checked
        again on every page, so a revoked one signs its sessions out)."""

        def gated(request: Request, form: Form | None) -> Response:
            operator = self._operator(request)
            if operator is None:
                return self.pages.redirect(request, "login")
            return view(request, form, operator)

        return gated

    def login_form(self, request: Request, form: Form | None) -> Response:
        return self._render(request, "login.html", None, section="login")

    def login(self, request: Request, form: Form | None) -> Response:
        assert form is not None
        secret = form.get("api_key")
        decision = self.ks.verify(secret or None, permissions=ADMIN_PERMISSION)
        identity = decision.identity
        if not decision.allowed or identity is None or identity.app_slug != ADMIN_APP_SLUG:
            # one message whatever was wrong: no oracle for which keys exist
            errors = {"api_key": "This is not a valid admin key (keysentry admin-key create)."}
            return self._render(request, "login.html", None, 401, errors=errors)
        response = self.pages.redirect(request)
        self.pages.sign_in(request, response, {"operator": identity.key_id})
        return response

    def logout(self, request: Request, form: Form | None) -> Response:
        response = self.pages.redirect(request, "login")
        self.pages.clear(request, response)
        return response

    # ------------------------------------------------------------ apps
    def apps(self, request: Request, form: Form | None, operator: ApiKey) -> Response:
        rows = []
        for app in self.ks.list_api_auth_apps():
            keys = self.ks.list_api_keys(app.app_slug)
            active = sum(key_status(k) == "active" for k in keys)
            rows.append({"app": app, "total": len(keys), "active": active})
        return self._render(request, "apps.html", operator, apps=rows, section="apps")

    def new_app(self, request: Request, form: Form | None, operator: ApiKey) -> Response:
        return self._render(request, "app_new.html", operator, form=Form(), section="apps",
                            schemes=self.ks.list_rate_limit_schemes())  # fmt: skip

    def create_app(self, request: Request, form: Form | None, operator: ApiKey) -> Response:
        assert form is not None
        try:
            app = self.ks.create_api_auth_app(
                form.get("app_slug"), form.get("name"), form.get("key_prefix"),
                description=form.get("description") or None,
                permissions=split_list(form.get("permissions")),
                rate_limit_scheme_slug=form.get("rate_limit_scheme_slug") or None,
                allowed_ips=split_list(form.get("allowed_ips")),
            )  # fmt: skip
        except ValidationError as exc:
            return self._render(request, "app_new.html", operator, 422, form=form,
                                errors=field_errors(exc), section="apps",
                                schemes=self.ks.list_rate_limit_schemes())  # fmt: skip
        return self.pages.redirect(request, f"apps/{app.app_slug}")

    def app(self, request: Request, _: Form | None, operator: ApiKey, **extra: Any) -> Response:
        slug = request.path_params["app_slug"]
        app = self.ks.get_api_auth_app(slug)
        status_filter = request.query_params.get("status", "all")
        status_filter = status_filter if status_filter in STATUS_FILTERS else "all"
        q = request.query_params.get("q", "")[:200].strip()
        range_name = _range(request)
        everything = self.ks.list_api_keys(slug)
        if status_filter == "stale":
            keys = self.ks.list_api_keys(slug, unused_for=STALE_AFTER)
        elif status_filter == "all":
            keys = everything
        else:
            keys = [k for k in everything if key_status(k) == status_filter]
        if q:
            needle = q.lower()
            keys = [k for k in keys if needle in k.name.lower() or k.key_suffix.endswith(q)]
        context = {
            "app": app, "keys": keys, "total": len(everything), "status_filter": status_filter,
            "q": q, "range": range_name, "ranges": list(RANGES), "form": Form(),
            "usage": usage_chart(self.ks, slug, None, range_name), "section": "apps",
        } | extra  # fmt: skip
        return self._render(request, "app.html", operator, 422 if "errors" in extra else 200,
                            **context)  # fmt: skip

    # ------------------------------------------------------------ keys
    def create_key(self, request: Request, form: Form | None, operator: ApiKey) -> Response:
        assert form is not None
        slug = request.path_params["app_slug"]
        try:
            expires_at = _utc_field(form.get("expires_at"), "expires_at")
            issued = self.ks.create_api_key(
                slug, form.get("name"), permissions=split_list(form.get("permissions")),
                owner_user_id=form.get("owner_user_id") or None, expires_at=expires_at,
                allowed_ips=split_list(form.get("allowed_ips")),
                credits=_integer(form.get("credits")),
            )  # fmt: skip
        except ValidationError as exc:
            return self.app(request, None, operator, form=form, errors=field_errors(exc))
        return self._secret(request, operator, issued, "Key created")

    def _secret(
        self, request: Request, operator: ApiKey, issued: IssuedKey, heading: str
    ) -> Response:
        return self._render(request, "secret.html", operator, issued=issued, heading=heading,
                            section="apps")  # fmt: skip

    def key(self, request: Request, _: Form | None, operator: ApiKey, **extra: Any) -> Response:
        key = self.ks.get_api_key(request.path_params["key_id"])
        range_name = _range(request)
        usage = usage_chart(self.ks, key.app_slug, key.id, range_name)
        key = self.ks.get_api_key(key.id)  # its last use, as the chart's query just wrote it
        return self._render(
            request, "key.html", operator, 422 if "errors" in extra else 200, key=key,
            range=range_name, ranges=list(RANGES), graces=GRACES, section="apps",
            usage=usage, **extra,
        )  # fmt: skip

    def revoke(self, request: Request, form: Form | None, operator: ApiKey) -> Response:
        assert form is not None
        key_id = request.path_params["key_id"]
        try:
            self.ks.revoke_api_key(key_id, reason=form.get("reason") or None)
        except ValidationError as exc:
            return self.key(request, None, operator, errors=field_errors(exc))
        return self.pages.redirect(request, f"keys/{key_id}")

    def rotate(self, request: Request, form: Form | None, operator: ApiKey) -> Response:
        assert form is not None
        grace = grace_seconds(form)
        if grace is None:
            return self.key(
                request, None, operator, errors={"grace_seconds": "choose a grace period"}
            )
        issued = self.ks.rotate_api_key(request.path_params["key_id"], grace_seconds=grace)
        return self._secret(request, operator, issued, "Key rotated")

    # ------------------------------------------------------------ schemes, events
    def schemes(self, request: Request, form: Form | None, operator: ApiKey) -> Response:
        return self._render(request, "schemes.html", operator, section="schemes",
                            schemes=self.ks.list_rate_limit_schemes())  # fmt: skip

    def events(self, request: Request, form: Form | None, operator: ApiKey) -> Response:
        after_text = request.query_params.get("after", "0")
        after = int(after_text) if after_text.isascii() and after_text.isdigit() else 0
        after = min(after, 2**62)
        events = self.ks.list_events(after, PAGE_SIZE + 1)
        return self._render(request, "events.html", operator, events=events[:PAGE_SIZE],
                            more=len(events) > PAGE_SIZE, after=after, page_size=PAGE_SIZE,
                            section="events")  # fmt: skip


def _range(request: Request) -> str:
    name = request.query_params.get("range", "24h")
    return name if name in RANGES else "24h"


def _utc_field(text: str, name: str) -> datetime | None:
    """A ``datetime-local`` input (no zone: read as UTC), or ``None`` when empty."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError.single(
            name, "must be a date and time, e.g. 2027-01-31T12:00"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _integer(text: str) -> int | None:
    """The credits field: a whole number, or ``None`` when empty."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) < 19):
        raise ValidationError.single("credits", "must be a whole number, e.g. 1000")
    return int(text)
