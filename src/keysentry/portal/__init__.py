"""The customer portal: where your customers manage their own keys, without your code.

Your app mints a link for one customer (:meth:`KeySentry.create_portal_session`) and sends
them to it; the link is good once, for a few minutes. Opening it shows a "Continue" form,
sent at once by the page's script: the link is spent by that POST, never by a GET, so a mail
scanner or a chat preview that fetches it spends nothing. That starts a portal session
(a signed cookie, for *session_seconds*) in which the customer sees only the keys of that
app whose ``owner_user_id`` is theirs: they create keys (with at most the permissions the
session allows), rotate them with a grace period, revoke them, and see their last use and
usage. Whatever id is put in a URL or a form, another owner's key is "not found".

Mount it (``Mount("/portal", create_portal_app(ks))``) or run ``keysentry serve``, which
serves it at ``/portal/``. Needs the ``web`` extra (``pip install 'keysentry[web]'``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keysentry.errors import ConfigurationError, NotFoundError, ValidationError
from keysentry.models import ApiKey
from keysentry.web.pages import Form, Pages, View, check_colour, check_site, cookie_secret
from keysentry.web.views import GRACES, RANGES, field_errors, grace_seconds, key_status, usage_chart

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = ["create_portal_app"]


def create_portal_app(
    ks: KeySentry,
    *,
    title: str = "API keys",
    logo_url: str | None = None,
    accent: str = "#2563eb",
    session_seconds: int = 3600,
    secret_key: str | None = None,
    max_keys: int = 100,
) -> Starlette:
    """The customer portal as an ASGI app.

    Args:
        ks: the service whose keys the customers manage.
        title: the name in the header (your product's).
        logo_url: a logo beside it: a path on your site or a ``data:`` URL (the pages load
            nothing from other origins).
        accent: the colour of links and buttons, ``#rrggbb``.
        session_seconds: how long a customer stays signed in after opening their link.
        secret_key: signs the session cookies; default ``$KEYSENTRY_SECRET_KEY``, else a
            secret kept in the store (the same for every worker on that store).
        max_keys: the most unrevoked keys one customer may hold of the app, and the most
            they may create in a day, through the portal (revoking keys frees room, but
            does not let a customer fill the store by creating and revoking in a loop).

    Raises:
        ConfigurationError: a malformed accent colour, logo URL, session length, title or
            *max_keys*.
    """
    try:
        accent = check_colour(accent)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if logo_url is not None and not (
        isinstance(logo_url, str)
        and (
            logo_url.startswith("data:image/")
            or (logo_url.startswith("/") and "//" not in logo_url)
        )
    ):
        raise ConfigurationError("logo_url must be a path on this site or a data:image/ URL")
    check_site(title, session_seconds, longest=86_400)
    if isinstance(max_keys, bool) or not isinstance(max_keys, int) or not 1 <= max_keys <= 10_000:
        raise ConfigurationError("max_keys must be an integer from 1 to 10000")
    pages = Pages("portal", cookie_secret(ks, secret_key), max_age=session_seconds,
                  globals={"site_title": title, "logo_url": logo_url,
                           "layout": "portal/layout.html",
                           "key_status": key_status, "customer": None, "section": ""})  # fmt: skip
    views = _Views(ks, pages, max_keys)
    page, gate = pages.page, views.signed_in
    theme = f":root {{ --accent: {accent}; }}\n"
    return Starlette(
        routes=[
            Route("/", page(gate(views.keys)), methods=["GET", "HEAD"]),
            Route("/t/{token}", page(views.opening), methods=["GET", "HEAD"]),
            Route("/t/{token}", page(views.enter, form=True), methods=["POST"]),
            Route("/logout", page(views.logout, form=True), methods=["POST"]),
            Route("/keys", page(gate(views.create), form=True), methods=["POST"]),
            Route("/keys/{key_id}", page(gate(views.key)), methods=["GET", "HEAD"]),
            Route("/keys/{key_id}/rotate", page(gate(views.rotate), form=True), methods=["POST"]),
            Route("/keys/{key_id}/revoke", page(gate(views.revoke), form=True), methods=["POST"]),
            pages.static_route({"theme.css": ("text/css; charset=utf-8", theme)}),
        ]
    )


class _Customer:
    """The signed-in customer, from the session cookie."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.app_slug: str = data["app"]
        self.owner_user_id: str = data["owner"]
        allowed = data.get("allowed")
        self.allowed: list[str] | None = list(allowed) if isinstance(allowed, list) else None
        self.return_url: str | None = data.get("return_url")


#: A page for a signed-in customer: the request, its form, and the customer.
CustomerView = Callable[[Request, "Form | None", _Customer], Response]


class _Views:
    def __init__(self, ks: KeySentry, pages: Pages, max_keys: int) -> None:
        self.ks = ks
        self.pages = pages
        self.max_keys = max_keys

    def _customer(self, request: Request) -> _Customer | None:
        data = self.pages.session(request)
        until = data.get("until")
        if not isinstance(data.get("app"), str) or not isinstance(data.get("owner"), str):
            return None
        if not isinstance(until, int | float) or until <= self.ks._clock():
            return None
        if not self.ks.portal_session_in_force(data.get("ticket")):  # ended by the app
            return None
        return _Customer(data)

    def _render(self, request: Request, template: str, customer: _Customer | None,
                status: int = 200, **context: Any) -> Response:  # fmt: skip
        return self.pages.render(request, f"portal/{template}",
                                 {"customer": customer, **context}, status)  # fmt: skip

    def _signed_out(self, request: Request) -> Response:
        return self._render(request, "signed_out.html", None, 401, heading="Your session ended",
                            message="Sign-in links last a few minutes; this page needs a new "
                            "one.")  # fmt: skip

    def signed_in(self, view: CustomerView) -> View:
        """*view* for a customer whose session is live; anyone else is told to open a new
        link."""

        def gated(request: Request, form: Form | None) -> Response:
            customer = self._customer(request)
            if customer is None:
                return self._signed_out(request)
            return view(request, form, customer)

        return gated

    def _own_keys(self, customer: _Customer) -> list[ApiKey]:
        """The customer's keys of the app, revoked ones included, oldest first."""
        return self.ks.list_api_keys(customer.app_slug, owner_user_id=customer.owner_user_id)

    def _no_room(self, customer: _Customer) -> str | None:
        """Why the customer may not create another key now, or ``None``."""
        keys = self._own_keys(customer)
        most = self.max_keys
        if sum(k.revoked_at is None for k in keys) >= most:
            return f"You have {most} keys, the most allowed: revoke one you no longer use."
        day_ago = self.ks._clock() - 86_400
        if sum(k.created_at.timestamp() > day_ago for k in keys) >= most:
            return f"You created {most} keys in the last day, the most allowed: try tomorrow."
        return None

    def _own_key(self, customer: _Customer, key_id: str) -> ApiKey:
        """The customer's key, or NotFoundError: another owner's key is not found either."""
        key = self.ks.get_api_key(key_id)
        if key.app_slug != customer.app_slug or key.owner_user_id != customer.owner_user_id:
            raise NotFoundError("key", key_id)
        return key

    # ------------------------------------------------------------ the link
    def opening(self, request: Request, form: Form | None) -> Response:
        """The link's page: a form that spends it (a GET never does)."""
        return self._render(request, "open.html", None)

    def enter(self, request: Request, form: Form | None) -> Response:
        ticket = self.ks.redeem_portal_link(request.path_params["token"])
        if ticket is None:
            return self._render(request, "signed_out.html", None, 403,
                                heading="This link no longer works",
                                message="It was used already, or it expired.")  # fmt: skip
        session = {
            "ticket": ticket.id,
            "app": ticket.app_slug,
            "owner": ticket.owner_user_id,
            "allowed": None if ticket.permissions is None else list(ticket.permissions),
            "return_url": ticket.return_url,
            "until": self.ks._clock() + self.pages.max_age,
        }
        response = self.pages.redirect(request)
        self.pages.sign_in(request, response, session)
        return response

    def logout(self, request: Request, form: Form | None) -> Response:
        customer = self._customer(request)
        response: Response
        if customer is not None and customer.return_url:
            response = self.pages.secure(
                Response(status_code=303, headers={"location": customer.return_url})
            )
        else:
            response = self._render(request, "signed_out.html", None, heading="Signed out",
                                    message="You signed out of the API keys page.")  # fmt: skip
        self.pages.clear(request, response)
        return response

    # ------------------------------------------------------------ keys
    def keys(self, request: Request, _: Form | None, customer: _Customer, **extra: Any) -> Response:
        app = self.ks.get_api_auth_app(customer.app_slug)
        keys = self._own_keys(customer)
        context = {"app": app, "keys": keys, "allowed": customer.allowed, "form": Form(),
                   "section": "keys"} | extra  # fmt: skip
        return self._render(request, "keys.html", customer, 422 if "errors" in extra else 200,
                            **context)  # fmt: skip

    def create(self, request: Request, form: Form | None, customer: _Customer) -> Response:
        assert form is not None
        full = self._no_room(customer)  # checked before each creation: a soft cap
        if full is not None:
            return self.keys(request, None, customer, form=form, errors={"name": full})
        permissions: list[str] = []
        if customer.allowed is not None:
            permissions = form.all("permissions")
            # a key without permissions would hold all of its app's: never from a session
            # that allows less
            if not permissions or any(p not in customer.allowed for p in permissions):
                errors = {"permissions": "choose at least one of the permissions shown"}
                return self.keys(request, None, customer, form=form, errors=errors)
        try:
            issued = self.ks.create_api_key(customer.app_slug, form.get("name"),
                                            permissions=permissions,
                                            owner_user_id=customer.owner_user_id)  # fmt: skip
        except ValidationError as exc:
            return self.keys(request, None, customer, form=form, errors=field_errors(exc))
        return self._render(request, "secret.html", customer, issued=issued,
                            heading="Key created", section="keys")  # fmt: skip

    def key(self, request: Request, _: Form | None, customer: _Customer, **extra: Any) -> Response:
        key = self._own_key(customer, request.path_params["key_id"])
        app = self.ks.get_api_auth_app(customer.app_slug)
        range_name = request.query_params.get("range", "24h")
        range_name = range_name if range_name in RANGES else "24h"
        usage = usage_chart(self.ks, key.app_slug, key.id, range_name)
        key = self._own_key(customer, key.id)  # its last use, as the chart's query wrote it
        return self._render(
            request, "key.html", customer, 422 if "errors" in extra else 200, key=key, app=app,
            range=range_name, ranges=list(RANGES), graces=GRACES, section="keys",
            usage=usage, **extra,
        )  # fmt: skip

    def rotate(self, request: Request, form: Form | None, customer: _Customer) -> Response:
        assert form is not None
        key = self._own_key(customer, request.path_params["key_id"])
        grace = grace_seconds(form)
        if grace is None:
            return self.key(
                request, None, customer, errors={"grace_seconds": "choose a grace period"}
            )
        issued = self.ks.rotate_api_key(key.id, grace_seconds=grace)
        return self._render(request, "secret.html", customer, issued=issued,
                            heading="Key rotated", section="keys")  # fmt: skip

    def revoke(self, request: Request, form: Form | None, customer: _Customer) -> Response:
        assert form is not None
        key = self._own_key(customer, request.path_params["key_id"])
        try:
            self.ks.revoke_api_key(key.id, reason=form.get("reason") or None)
        except ValidationError as exc:
            return self.key(request, None, customer, errors=field_errors(exc))
        return self.pages.redirect(request, f"keys/{key.id}")
