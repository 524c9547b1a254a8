"""Your app with keysentry's dashboard and customer portal: ``uvicorn examples.portal_app:app``
(``pip install -e '.[serve]'``), then open http://127.0.0.1:8000/account/api-keys to be sent to
the portal as customer ``user_1``, and http://127.0.0.1:8000/dashboard/ to sign in with the
admin key it prints."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route

from keysentry import KeySentry
from keysentry.admin import create_admin_key
from keysentry.dashboard import create_dashboard_app
from keysentry.portal import create_portal_app

ks = KeySentry("sqlite:///portal-example.db")
if not any(app.app_slug == "orders-api" for app in ks.list_api_auth_apps()):
    ks.create_api_auth_app("orders-api", "Orders API", "sk_orders",
                           permissions=["orders:read", "orders:write"])  # fmt: skip
    print("admin key for /dashboard/:", create_admin_key(ks, "example").secret)


async def api_keys_page(request: Request) -> RedirectResponse:
    # behind your own sign-in: this user manages their keys in the portal
    session = ks.create_portal_session("orders-api", owner_user_id="user_1", ttl_seconds=900,
                                       return_url="/", permissions=["orders:read"])  # fmt: skip
    return RedirectResponse(session.url, status_code=303)


app = Starlette(routes=[
    Route("/account/api-keys", api_keys_page),
    Mount("/dashboard", create_dashboard_app(ks)),
    Mount("/portal", create_portal_app(ks, title="Orders API keys", accent="#0f766e")),
])  # fmt: skip
