"""What a person does, in a real browser (Debian's Chromium, driven by Playwright) against a
real server (uvicorn): an operator signs in, creates an app and a key, copies the secret, the
key gets 200 from a protected API, the operator revokes it and the next request gets 403; a
customer opens a portal link, creates a key, rotates it, and sees the old secret stop after
the grace period.

Set ``KEYSENTRY_SCREENSHOTS=docs/img`` to keep each page's picture (docs/dashboard.md shows
them). Skipped without Chromium or Playwright, except under KEYSENTRY_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from keysentry import KeySentry
from keysentry.admin import create_admin_key
from keysentry.asgi import KeySentryMiddleware
from keysentry.dashboard import create_dashboard_app
from keysentry.portal import create_portal_app
from keysentry.server import free_port, running
from keysentry.testing import FakeClock
from tests.conftest import REQUIRE_SERVICES
from tests.system.http import http_status

CHROMIUM = os.environ.get("KEYSENTRY_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("KEYSENTRY_SCREENSHOTS")
HOUR = 3600
TRAFFIC_HOURS = 12  # the site's clock starts this long ago; the traffic brings it to now


def _browser_problem() -> str | None:
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    problem = _browser_problem()
    if problem is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"KEYSENTRY_REQUIRE_SERVICES=1 but {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


async def _orders(request: Request) -> JSONResponse:
    return JSONResponse({"orders": [], "for": request.state.api_key.key_name})


class Site:
    """The served app: a protected API, the dashboard and the portal, on one fake clock."""

    def __init__(self, ks: KeySentry, clock: FakeClock, base: str) -> None:
        self.ks, self.clock, self.base = ks, clock, base

    def api(self, secret: str) -> int:
        """GET /v1/orders with the key: the status."""
        request = urllib.request.Request(self.base + "/v1/orders",
                                         headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
        return http_status(request)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    clock = FakeClock(time.time() - TRAFFIC_HOURS * HOUR)
    ks = KeySentry(f"sqlite:///{tmp_path}/pages.db", clock=clock, usage_interval=None)
    guard = Middleware(KeySentryMiddleware, sentry=ks,
                       permissions={"GET /v1/orders": ["orders:read"]})  # fmt: skip
    api = Starlette(routes=[Route("/v1/orders", _orders)], middleware=[guard])
    app = Starlette(routes=[
        Mount("/dashboard", create_dashboard_app(ks)),
        Mount("/portal", create_portal_app(ks, title="Acme API keys", accent="#0f766e")),
        Mount("/", api),
    ])  # fmt: skip
    port = free_port()
    with running(app, "127.0.0.1", port):
        yield Site(ks, clock, f"http://127.0.0.1:{port}")
    ks.close()


def _shot(page: Any, name: str, tmp_path: Path) -> None:
    for directory in filter(None, [SHOTS, str(tmp_path)]):
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)


def _traffic(site: Site, secret: str, hours: int = TRAFFIC_HOURS) -> None:
    """Some verifications each hour for *hours* (the clock moves on), so that the charts
    have bars."""
    for hour in range(hours):
        for _ in range(3 + hour % 5):
            site.ks.verify(secret, permissions="orders:read")
        site.ks.verify(secret, permissions="orders:refund")
        site.clock.now += HOUR
    site.ks.usage.flush()  # what the writer does every usage_interval


def test_an_operator_issues_and_revokes_a_key(chromium: Any, site: Site, tmp_path: Path) -> None:
    admin = create_admin_key(site.ks, "ops").secret
    site.ks.create_rate_limit_scheme(slug="standard", name="Standard", rules=[
        {"unit": "minute", "max_requests": 600},
        {"unit": "day", "max_requests": 100_000, "mode": "per_owner"}])  # fmt: skip
    context = chromium.new_context(viewport={"width": 1200, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.base)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before a revoke
    page.goto(site.base + "/dashboard/")
    assert page.url.endswith("/dashboard/login")
    _shot(page, "dashboard-sign-in", tmp_path)
    page.get_by_label("Admin key").fill(admin)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Create an app").click()
    _shot(page, "dashboard-new-app", tmp_path)
    page.get_by_label("Slug").fill("orders-api")
    page.get_by_label("Name").fill("Orders API")
    page.get_by_label("Key prefix").fill("sk_orders")
    page.get_by_label("Permissions").fill("orders:read, orders:write")
    page.get_by_role("button", name="Create the app").click()
    assert page.get_by_role("heading", name="Orders API").is_visible()
    page.get_by_label("Name").fill("checkout service")
    page.get_by_label("Permissions").fill("orders:read")
    page.get_by_role("button", name="Create the key").click()
    assert page.get_by_text("You will not see it again").is_visible()
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    secret = page.evaluate("navigator.clipboard.readText()")
    assert secret.startswith("sk_orders_")
    assert secret == page.get_by_label("The new API key").input_value()
    _shot(page, "dashboard-new-key", tmp_path)
    assert site.api(secret) == 200

    _traffic(site, secret)
    page.get_by_role("link", name="Go to the key").click()
    assert page.locator("figure.chart svg").count() == 1
    _shot(page, "dashboard-key", tmp_path)
    page.get_by_label("Reason").fill("leaked in a log")
    page.get_by_role("button", name="Revoke the key").click()
    assert page.locator(".badge.revoked").first.is_visible()
    assert site.api(secret) == 403
    page.get_by_role("link", name="orders-api").click()  # the breadcrumb
    page.get_by_label("Show keys").select_option("revoked")
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_role("link", name="checkout service").is_visible()
    _shot(page, "dashboard-app", tmp_path)
    page.get_by_role("link", name="Audit log").click()
    assert page.get_by_text("key.revoked").is_visible()
    _shot(page, "dashboard-audit-log", tmp_path)
    page.get_by_role("link", name="Rate-limit schemes").click()
    assert page.get_by_text("600/minute").count() >= 1
    _shot(page, "dashboard-schemes", tmp_path)
    page.get_by_role("link", name="Apps").click()
    _shot(page, "dashboard-apps", tmp_path)
    context.close()


def test_a_customer_manages_their_keys_in_the_portal(
    chromium: Any, site: Site, tmp_path: Path
) -> None:
    ks = site.ks
    ks.create_api_auth_app("orders-api", "Orders API", "sk_orders",
                           permissions=["orders:read", "orders:write"])  # fmt: skip
    old_key = ks.create_api_key("orders-api", "laptop", permissions=["orders:read"],
                                owner_user_id="customer-7")  # fmt: skip
    ks.create_api_key("orders-api", "someone else's", owner_user_id="customer-8")
    _traffic(site, old_key.secret)
    link = ks.create_portal_session("orders-api", "customer-7", permissions=["orders:read"],
                                    return_url="/account")  # fmt: skip
    context = chromium.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(site.base + link.url)  # its page sends its Continue form by script
    page.wait_for_url(site.base + "/portal/")
    assert page.get_by_role("heading", name="Your API keys").is_visible()
    assert page.get_by_role("link", name="laptop").is_visible()
    assert page.get_by_text("someone else's").count() == 0
    page.get_by_label("Name").fill("production server")
    page.get_by_role("button", name="Create the key").click()
    secret = page.get_by_label("The new API key").input_value()
    assert site.api(secret) == 200
    _shot(page, "portal-new-key", tmp_path)
    page.get_by_role("link", name="All your keys").click()
    _shot(page, "portal-keys", tmp_path)
    page.get_by_role("link", name="laptop").click()
    assert page.locator("figure.chart svg").count() == 1
    _shot(page, "portal-key", tmp_path)
    page.get_by_role("link", name="Your API keys").first.click()
    page.get_by_role("link", name="production server").click()
    page.get_by_label("Grace period").select_option(label="1 hour")
    page.get_by_role("button", name="Rotate the key").click()
    assert page.get_by_role("heading", name="Key rotated").is_visible()
    rotated = page.get_by_label("The new API key").input_value()
    assert rotated != secret
    assert site.api(rotated) == 200
    assert site.api(secret) == 200  # the grace period
    site.clock.now += HOUR + 1
    assert site.api(secret) == 401
    assert site.api(rotated) == 200
    page.goto(site.base + "/portal/")  # an hour on, the portal session has ended too
    assert page.get_by_role("heading", name="Your session ended").is_visible()

    again = context.new_page()  # the link was spent: it opens nothing for anyone
    again.goto(site.base + link.url)
    again.get_by_text("This link no longer works").wait_for()
    _shot(again, "portal-spent-link", tmp_path)
    context.close()


def test_a_portal_link_opens_without_javascript_and_a_fetch_spends_nothing(
    chromium: Any, site: Site
) -> None:
    ks = site.ks
    ks.create_api_auth_app("shop", "Shop", "sk_shop")
    ks.create_api_key("shop", "their laptop", owner_user_id="customer-9")
    link = ks.create_portal_session("shop", "customer-9")
    with urllib.request.urlopen(site.base + link.url) as fetched:  # a mail scanner's GET
        assert fetched.status == 200
    context = chromium.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(site.base + link.url)
    assert page.get_by_role("heading", name="Open your API keys").is_visible()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(site.base + "/portal/")
    assert page.get_by_role("link", name="their laptop").is_visible()
    context.close()
