"""The operator dashboard, attacked: who may sign in, what a session can do, what a page may
show (never a secret or a hash but the one-time display), CSRF, odd bodies and paths."""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest

from keysentry import ConfigurationError, KeySentry
from keysentry.admin import create_admin_key
from keysentry.dashboard import create_dashboard_app
from keysentry.testing import FakeClock
from tests.web.helpers import Browser, errors, new_secret, pages_app

XSS = "<script>alert(1)</script>"


@pytest.fixture
def ks() -> Iterator[KeySentry]:
    with KeySentry("memory://", clock=FakeClock(1_800_000_000), usage_interval=None) as sentry:
        sentry.create_api_auth_app("shop", "Shop " + XSS, "sk_shop", permissions=["orders:*"],
                                   description=XSS)  # fmt: skip
        yield sentry


@pytest.fixture
def browser(ks: KeySentry) -> Browser:
    return Browser(pages_app(ks))


def signed_in(ks: KeySentry, browser: Browser) -> str:
    admin = create_admin_key(ks, "ops").secret
    assert browser.sign_in(admin).status_code == 200
    return admin


PAGES = ["/dashboard/", "/dashboard/apps/new", "/dashboard/apps/shop", "/dashboard/schemes",
         "/dashboard/events"]  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
def test_every_page_wants_a_sign_in(browser: Browser, path: str) -> None:
    response = browser.get(path, follow=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"


def test_an_admin_key_signs_in_and_sees_the_apps(ks: KeySentry, browser: Browser) -> None:
    signed_in(ks, browser)
    page = browser.get("/dashboard/")
    assert page.status_code == 200
    assert "Shop &lt;script&gt;" in page.text


@pytest.mark.parametrize("who", ["customer", "verify-only", "revoked", "garbage", "empty"])
def test_only_a_live_admin_key_signs_in(ks: KeySentry, browser: Browser, who: str) -> None:
    if who == "customer":  # a key of an app granting everything is still no admin key
        ks.create_api_auth_app("wide", "Wide", "sk_wide", permissions=["*"])
        secret = ks.create_api_key("wide", "all", permissions=["keysentry:admin"]).secret
    elif who == "verify-only":
        secret = create_admin_key(ks, "scraper", verify_only=True).secret
    elif who == "revoked":
        issued = create_admin_key(ks, "old")
        ks.revoke_api_key(issued.key.id)
        secret = issued.secret
    else:
        secret = "" if who == "empty" else "ks_admin_" + "x" * 38
    page = browser.sign_in(secret)
    assert page.status_code == 401
    assert errors(page.text) == ["This is not a valid admin key (keysentry admin-key create)."]
    assert browser.get("/dashboard/", follow=False).status_code == 303


def test_revoking_the_admin_key_ends_its_sessions(ks: KeySentry, browser: Browser) -> None:
    signed_in(ks, browser)
    (operator,) = ks.list_api_keys("keysentry-admin")
    ks.revoke_api_key(operator.id)
    assert browser.get("/dashboard/", follow=False).status_code == 303


def test_a_forged_or_foreign_cookie_is_no_session(ks: KeySentry, browser: Browser) -> None:
    signed_in(ks, browser)
    cookie = browser.client.cookies["keysentry_dashboard"]
    payload, _, signature = cookie.rpartition(".")
    forged = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    browser.client.cookies.clear()
    browser.client.cookies.set("keysentry_dashboard", forged, path="/dashboard/")
    assert browser.get("/dashboard/", follow=False).status_code == 303
    # the portal's cookie (same secret, another salt) does not open the dashboard
    session = ks.create_portal_session("shop", "someone")
    portal = Browser(pages_app(ks))
    portal.open_link(session.url)
    portal_cookie = portal.client.cookies["keysentry_portal"]
    browser.client.cookies.clear()
    browser.client.cookies.set("keysentry_dashboard", portal_cookie, path="/dashboard/")
    assert browser.get("/dashboard/", follow=False).status_code == 303


def test_a_key_from_creation_to_revocation(ks: KeySentry, browser: Browser) -> None:
    signed_in(ks, browser)
    form = {"name": XSS, "permissions": "orders:read", "owner_user_id": "u1"}
    page = browser.post("/dashboard/apps/shop/keys", form)
    assert page.status_code == 200
    assert "You will not see it again" in page.text
    secret = new_secret(page.text)
    decision = ks.verify(secret, permissions="orders:read")
    assert decision.allowed
    assert decision.identity is not None
    key_id = decision.identity.key_id
    assert XSS not in page.text
    key_page = browser.get(f"/dashboard/keys/{key_id}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in key_page.text
    assert secret not in key_page.text
    revoked = browser.post(f"/dashboard/keys/{key_id}/revoke", {"reason": XSS})
    assert revoked.status_code == 200
    assert ks.get_api_key(key_id).revoked_reason == XSS
    assert XSS not in revoked.text
    assert ks.verify(secret).reason == "key_revoked"


def test_rotation_shows_the_new_secret_and_keeps_the_old_for_the_grace(
    ks: KeySentry, browser: Browser
) -> None:
    signed_in(ks, browser)
    issued = ks.create_api_key("shop", "rotating")
    page = browser.post(f"/dashboard/keys/{issued.key.id}/rotate", {"grace_seconds": "3600"})
    assert page.status_code == 200
    new = new_secret(page.text)
    assert new != issued.secret
    assert ks.verify(new).allowed
    assert ks.verify(issued.secret).allowed  # within the grace period
    bad = browser.post(f"/dashboard/keys/{issued.key.id}/rotate", {"grace_seconds": "99999999"})
    assert bad.status_code == 422
    assert errors(bad.text) == ["choose a grace period"]


def test_field_errors_name_the_field_and_write_nothing(ks: KeySentry, browser: Browser) -> None:
    signed_in(ks, browser)
    before = len(ks.list_events())
    page = browser.post("/dashboard/apps", {"app_slug": "Bad Slug", "name": "X",
                                            "key_prefix": "sk_x"})  # fmt: skip
    assert page.status_code == 422
    assert 'id="f-app_slug"' in page.text
    assert 'aria-invalid="true" aria-describedby="f-app_slug-error"' in page.text
    assert 'value="Bad Slug"' in page.text  # what was typed is kept
    key = browser.post("/dashboard/apps/shop/keys", {"name": "k", "permissions": "billing:read"})
    assert key.status_code == 422
    assert any("billing:read" in e for e in errors(key.text))
    ips = browser.post("/dashboard/apps/shop/keys", {"name": "k", "allowed_ips": "10.0.0.1/8"})
    assert errors(ips.text) == ["&#39;10.0.0.1/8&#39; has host bits set: did you mean 10.0.0.0/8?"]
    credits = browser.post("/dashboard/apps/shop/keys", {"name": "k", "credits": "ten"})
    assert errors(credits.text) == ["must be a whole number, e.g. 1000"]
    expiry = browser.post("/dashboard/apps/shop/keys", {"name": "k", "expires_at": "soon"})
    assert errors(expiry.text) == ["must be a date and time, e.g. 2027-01-31T12:00"]
    assert len(ks.list_events()) == before
    assert ks.list_api_keys("shop") == []


def test_an_app_created_from_the_dashboard(ks: KeySentry, browser: Browser) -> None:
    signed_in(ks, browser)
    form = {"app_slug": "billing", "name": "Billing", "key_prefix": "sk_bill",
            "permissions": "invoices:read, invoices:write",
            "allowed_ips": "10.0.0.0/8"}  # fmt: skip
    page = browser.post("/dashboard/apps", form)
    assert page.status_code == 200
    assert ks.get_api_auth_app("billing").permissions == ["invoices:read", "invoices:write"]
    assert ks.get_api_auth_app("billing").allowed_ips == ["10.0.0.0/8"]
    assert "<code>10.0.0.0/8</code>" in page.text


@pytest.mark.parametrize("csrf", ["missing", "wrong", "another session's"])
def test_a_form_without_its_token_is_refused(ks: KeySentry, browser: Browser, csrf: str) -> None:
    signed_in(ks, browser)
    issued = ks.create_api_key("shop", "target")
    data: dict[str, str] = {"reason": "csrf"}
    if csrf == "wrong":
        data["csrf"] = "x" * 32
    elif csrf == "another session's":
        other = Browser(pages_app(ks))
        other.get("/dashboard/login")
        data["csrf"] = other.csrf
    page = browser.post(f"/dashboard/keys/{issued.key.id}/revoke", data, csrf=False)
    assert page.status_code == 400
    assert "security token" in page.text
    assert ks.get_api_key(issued.key.id).revoked_at is None


def test_a_token_known_before_sign_in_is_no_good_after(ks: KeySentry) -> None:
    # an attacker who can plant a cookie (a sibling subdomain, say) plants their own
    # signed-out session, whose token they know, and waits for the operator to sign in
    attacker = Browser(pages_app(ks))
    attacker.get("/dashboard/login")
    planted, known = attacker.client.cookies["keysentry_dashboard"], attacker.csrf
    operator = Browser(pages_app(ks))
    operator.client.cookies.set("keysentry_dashboard", planted, path="/dashboard/")
    sign_in = {"csrf": known, "api_key": create_admin_key(ks).secret}
    assert operator.post("/dashboard/login", sign_in, csrf=False).status_code == 200
    assert operator.csrf != known
    issued = ks.create_api_key("shop", "target")
    forged = {"csrf": known, "reason": "forged"}
    page = operator.post(f"/dashboard/keys/{issued.key.id}/revoke", forged, csrf=False)
    assert page.status_code == 400
    assert ks.get_api_key(issued.key.id).revoked_at is None
    mine = operator.post(f"/dashboard/keys/{issued.key.id}/revoke", {"reason": "mine"})
    assert mine.status_code == 200
    assert ks.get_api_key(issued.key.id).revoked_at is not None


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"reason": "x"}'),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("application/x-www-form-urlencoded", b"reason=" + b"a" * 70_000),
        ("application/x-www-form-urlencoded", b"reason=%00&csrf=x"),
        ("application/x-www-form-urlencoded", b"\xff\xfe=\xff"),
    ],
)
def test_odd_bodies_are_refused_cleanly(
    ks: KeySentry, browser: Browser, content_type: str, body: bytes
) -> None:
    signed_in(ks, browser)
    issued = ks.create_api_key("shop", "target")
    response = browser.client.post(f"/dashboard/keys/{issued.key.id}/revoke", content=body,
                                   headers={"content-type": content_type})  # fmt: skip
    assert response.status_code == 400
    assert ks.get_api_key(issued.key.id).revoked_at is None


def test_paths_and_methods(ks: KeySentry, browser: Browser) -> None:
    signed_in(ks, browser)
    assert browser.get("/dashboard/apps/nope").status_code == 404
    assert browser.get("/dashboard/keys/key_nope").status_code == 404
    assert browser.get("/dashboard/keys/" + "k" * 5000).status_code in (404, 422, 400)
    assert browser.get("/dashboard/static/../pages.py").status_code == 404
    assert browser.get("/dashboard/static/%2e%2e%2fpages.py").status_code == 404
    assert browser.client.get("/dashboard/keys/key_x/revoke").status_code == 405
    assert browser.client.delete("/dashboard/apps/shop").status_code == 405
    assert browser.get("/dashboard/events?after=-1").status_code == 200
    assert browser.get("/dashboard/events?after=99999999999999999999999").status_code == 200
    assert browser.get("/dashboard/apps/shop?status=%00&q=%ff&range=x").status_code == 200


def test_no_page_shows_a_secret_or_a_hash(ks: KeySentry, browser: Browser) -> None:
    admin = signed_in(ks, browser)
    made = browser.post("/dashboard/apps/shop/keys", {"name": "shown once"})
    shown_once = new_secret(made.text)
    keys = [ks.create_api_key("shop", f"k{i}", metadata={"n": i}) for i in range(3)]
    for issued in keys:
        ks.verify(issued.secret)
    browser.seen.clear()
    for path in PAGES:
        browser.get(path)
    for issued in keys:
        browser.get(f"/dashboard/keys/{issued.key.id}")
    stored = ks.store.find_keys
    hashes = [r.key_hash for issued in keys for r in stored(issued.key.key_prefix,
                                                           issued.key.key_suffix)]  # fmt: skip
    for html in browser.seen:
        for secret in [admin, shown_once, *(i.secret for i in keys)]:
            assert secret not in html
        for digest in hashes:
            assert digest not in html


def test_security_headers_and_cookie_flags(ks: KeySentry) -> None:
    browser = Browser(pages_app(ks), base_url="https://testserver")
    page = browser.get("/dashboard/login")
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    cookie = SimpleCookie(page.headers["set-cookie"])["keysentry_dashboard"]
    assert cookie["httponly"]
    assert cookie["secure"]
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/dashboard/"
    plain = Browser(pages_app(ks)).get("/dashboard/login")
    assert not SimpleCookie(plain.headers["set-cookie"])["keysentry_dashboard"]["secure"]
    assert "<script" not in page.text.replace(
        '<script src="/dashboard/static/keysentry.js" defer></script>', ""
    )  # no inline script


def test_every_control_has_a_label(ks: KeySentry, browser: Browser) -> None:
    import re

    signed_in(ks, browser)
    ks.create_api_key("shop", "k")
    (key,) = ks.list_api_keys("shop")
    for path in [*PAGES, f"/dashboard/keys/{key.id}", "/dashboard/login"]:
        html = browser.get(path).text
        for control in re.finditer(r'<(input|select|textarea)\b[^>]*\bid="([^"]+)"', html):
            assert f'for="{control.group(2)}"' in html, f"{path}: #{control.group(2)} unlabelled"
        visible = re.findall(r'<(?:input|select|textarea)\b(?![^>]*type="hidden")[^>]*>', html)
        for tag in visible:
            inside_label = 'type="checkbox"' in tag
            assert 'id="' in tag or inside_label, f"{path}: {tag} has no id for its label"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"session_seconds": "3600"}, "session_seconds must be an integer from 60 to 604800"),
        ({"session_seconds": 10}, "session_seconds must be"),
        ({"session_seconds": 30 * 86_400}, "session_seconds must be"),
        ({"title": 5}, "title must be a string"),
        ({"secret_key": "short"}, "secret_key must be a string of 16"),
    ],
)
def test_a_bad_option_is_named(ks: KeySentry, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_dashboard_app(ks, **kwargs)
