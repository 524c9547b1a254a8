"""The customer portal, attacked: owner A's session never shows, rotates or revokes owner B's
keys (or another app's), whatever ids go in URLs or forms; links are good once and expire;
a session creates keys only with the permissions it was given; CSRF; escaping; branding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from itsdangerous import URLSafeTimedSerializer

from keysentry import ConfigurationError, KeySentry
from keysentry.models import IssuedKey
from keysentry.portal import create_portal_app
from keysentry.testing import FakeClock
from tests.web.helpers import Browser, errors, new_secret, pages_app

T0 = 1_800_000_000.0
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def ks(clock: FakeClock) -> Iterator[KeySentry]:
    with KeySentry("memory://", clock=clock, usage_interval=None) as sentry:
        granted = ["orders:read", "orders:write", "admin:*"]
        sentry.create_api_auth_app("shop", "Shop", "sk_shop", permissions=granted)
        sentry.create_api_auth_app("blog", "Blog", "sk_blog")
        yield sentry


@pytest.fixture
def keys(ks: KeySentry) -> dict[str, IssuedKey]:
    return {
        "alice": ks.create_api_key(
            "shop", "alice " + XSS, owner_user_id="alice", metadata={"note": XSS}
        ),
        "bob": ks.create_api_key("shop", "bob's", owner_user_id="bob"),
        "alice-blog": ks.create_api_key("blog", "alice on the blog", owner_user_id="alice"),
        "nobody": ks.create_api_key("shop", "the app's own"),
    }


def enter(ks: KeySentry, owner: str = "alice", **options: Any) -> Browser:
    browser = Browser(pages_app(ks))
    session = ks.create_portal_session("shop", owner, **options)
    assert browser.open_link(session.url).status_code == 200
    return browser


def test_a_customer_sees_only_their_keys_of_that_app(
    ks: KeySentry, keys: dict[str, IssuedKey]
) -> None:
    page = enter(ks).get("/portal/")
    assert "alice &lt;img src=x onerror=alert(1)&gt;" in page.text
    assert XSS not in page.text
    for other in ("bob&#39;s", "alice on the blog", "the app&#39;s own"):
        assert other not in page.text


@pytest.mark.parametrize("other", ["bob", "alice-blog", "nobody"])
def test_another_owners_key_is_not_found_whatever_the_route(
    ks: KeySentry, keys: dict[str, IssuedKey], other: str
) -> None:
    browser = enter(ks)
    target = keys[other].key.id
    assert browser.get(f"/portal/keys/{target}").status_code == 404
    assert browser.post(f"/portal/keys/{target}/revoke", {"reason": "x"}).status_code == 404
    assert browser.post(f"/portal/keys/{target}/rotate", {"grace_seconds": "0"}).status_code == 404
    untouched = ks.get_api_key(target)
    assert untouched.revoked_at is None
    assert ks.verify(keys[other].secret).allowed  # not rotated either


def test_form_fields_cannot_choose_the_owner_or_app(
    ks: KeySentry, keys: dict[str, IssuedKey]
) -> None:
    browser = enter(ks, permissions=["orders:read"])
    page = browser.post("/portal/keys", {"name": "mine", "permissions": "orders:read",
                                         "owner_user_id": "bob", "app_slug": "blog"})  # fmt: skip
    decision = ks.verify(new_secret(page.text))
    assert decision.identity is not None
    assert (decision.identity.app_slug, decision.identity.owner_user_id) == ("shop", "alice")


@pytest.mark.parametrize("chosen", [[], ["admin:*"], ["orders:read", "orders:write"], ["*"]])
def test_keys_get_no_more_than_the_session_allows(ks: KeySentry, chosen: list[str]) -> None:
    browser = enter(ks, permissions=["orders:read"])
    page = browser.post("/portal/keys", {"name": "k", "permissions": chosen})
    assert page.status_code == 422
    assert errors(page.text) == ["choose at least one of the permissions shown"]
    assert ks.list_api_keys("shop") == []


def test_a_session_without_limits_gives_the_apps_permissions(ks: KeySentry) -> None:
    browser = enter(ks)
    page = browser.post("/portal/keys", {"name": "k", "permissions": "admin:*"})
    decision = ks.verify(new_secret(page.text), permissions="orders:write")
    assert decision.allowed
    assert decision.identity is not None
    assert decision.identity.owner_user_id == "alice"


def test_rotate_and_revoke_own_keys(ks: KeySentry, keys: dict[str, IssuedKey],
                                    clock: FakeClock) -> None:  # fmt: skip
    browser = enter(ks)
    mine = keys["alice"]
    page = browser.post(f"/portal/keys/{mine.key.id}/rotate", {"grace_seconds": "3600"})
    new = new_secret(page.text)
    assert ks.verify(new).allowed
    assert ks.verify(mine.secret).allowed  # the grace period
    clock.now = T0 + 3601
    assert ks.verify(mine.secret).reason == "invalid_key"
    browser = enter(ks)  # the first session lasted an hour too
    browser.post(f"/portal/keys/{mine.key.id}/revoke", {"reason": "done"})
    assert ks.verify(new).reason == "key_revoked"


def test_a_link_is_good_once_and_expires(ks: KeySentry, clock: FakeClock) -> None:
    session = ks.create_portal_session("shop", "alice", ttl_seconds=60)
    first, second = Browser(pages_app(ks)), Browser(pages_app(ks))
    assert first.open_link(session.url).status_code == 200
    refused = second.open_link(session.url)
    assert refused.status_code == 403
    assert "This link no longer works" in refused.text
    assert second.get("/portal/").status_code == 401
    late = ks.create_portal_session("shop", "alice", ttl_seconds=60)
    clock.now = T0 + 61
    assert Browser(pages_app(ks)).open_link(late.url).status_code == 403
    assert Browser(pages_app(ks)).open_link("/portal/t/" + "x" * 43).status_code == 403
    assert Browser(pages_app(ks)).open_link("/portal/t/%00").status_code == 403


def test_fetching_a_link_spends_nothing(ks: KeySentry, keys: dict[str, IssuedKey]) -> None:
    # a mail scanner or a chat preview fetches the link before the customer does
    session = ks.create_portal_session("shop", "alice")
    scanner = Browser(pages_app(ks))
    for _ in range(2):
        page = scanner.get(session.url)
        assert page.status_code == 200
        assert "data-autosubmit" in page.text
        assert keys["alice"].key.name not in page.text
    assert scanner.client.head(session.url).status_code == 200
    assert scanner.get("/portal/").status_code == 401  # fetching signed nobody in
    # a POST without the page's token (another site's form, say) spends nothing either
    forged = scanner.client.post(session.url, data={"csrf": "x" * 32})
    assert forged.status_code == 400
    customer = Browser(pages_app(ks))
    assert customer.open_link(session.url).status_code == 200
    assert "alice &lt;img" in customer.get("/portal/").text


def test_the_session_ends(ks: KeySentry, clock: FakeClock) -> None:
    browser = enter(ks)
    clock.now = T0 + 3601  # the default session_seconds
    assert browser.get("/portal/").status_code == 401


def test_csrf_and_odd_bodies(ks: KeySentry, keys: dict[str, IssuedKey]) -> None:
    browser = enter(ks)
    target = keys["alice"].key.id
    assert browser.post(f"/portal/keys/{target}/revoke", {}, csrf=False).status_code == 400
    odd = browser.client.post(f"/portal/keys/{target}/revoke", content=b'{"csrf": "x"}',
                              headers={"content-type": "application/json"})  # fmt: skip
    assert odd.status_code == 400
    assert ks.get_api_key(target).revoked_at is None


def test_a_token_known_before_the_link_is_no_good_after(
    ks: KeySentry, keys: dict[str, IssuedKey]
) -> None:
    # a planted signed-out session: its token is the attacker's (signed, not secret: they
    # read it from the cookie), and must not carry over
    attacker = Browser(pages_app(ks))
    attacker.get("/portal/")
    planted = attacker.client.cookies["keysentry_portal"]
    known = URLSafeTimedSerializer("unknown to the attacker").loads_unsafe(planted)[1]["csrf"]
    customer = Browser(pages_app(ks))
    customer.client.cookies.set("keysentry_portal", planted, path="/portal/")
    assert customer.open_link(ks.create_portal_session("shop", "alice").url).status_code == 200
    assert customer.csrf != known
    target = keys["alice"].key.id
    forged = {"csrf": known, "reason": "forged"}
    assert customer.post(f"/portal/keys/{target}/revoke", forged, csrf=False).status_code == 400
    assert ks.get_api_key(target).revoked_at is None
    assert customer.post(f"/portal/keys/{target}/revoke", {"reason": "mine"}).status_code == 200
    assert ks.get_api_key(target).revoked_at is not None


def test_a_dashboard_session_is_no_portal_session(ks: KeySentry) -> None:
    from keysentry.admin import create_admin_key

    dashboard = Browser(pages_app(ks))
    dashboard.sign_in(create_admin_key(ks).secret)
    browser = Browser(pages_app(ks))
    browser.client.cookies.set("keysentry_portal", dashboard.client.cookies["keysentry_dashboard"],
                               path="/portal/")  # fmt: skip
    assert browser.get("/portal/").status_code == 401


def test_logout_returns_to_the_host(ks: KeySentry) -> None:
    browser = enter(ks, return_url="/account")
    assert 'href="/account"' in browser.get("/portal/").text
    out = browser.post("/portal/logout", {}, follow=False)
    assert out.status_code == 303
    assert out.headers["location"] == "/account"
    assert browser.get("/portal/").status_code == 401


def test_branding_and_its_checks(ks: KeySentry) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/portal", create_portal_app(
        ks, title="Acme " + XSS, accent="#0F766E", logo_url="/static/acme.svg"))])  # fmt: skip
    browser = Browser(app)
    browser.open_link(ks.create_portal_session("shop", "alice").url)
    page = browser.get("/portal/")
    assert "Acme &lt;img" in page.text
    assert '<img src="/static/acme.svg" alt="">' in page.text
    assert browser.get("/portal/static/theme.css").text == ":root { --accent: #0f766e; }\n"
    for bad in ({"accent": "red"}, {"accent": "#fff; }"}, {"logo_url": "https://cdn.example/x"},
                {"logo_url": "javascript:alert(1)"}, {"session_seconds": 10},
                {"logo_url": 5}, {"title": None}):  # fmt: skip
        with pytest.raises(ConfigurationError):
            create_portal_app(ks, **bad)  # type: ignore[arg-type]


def test_a_customer_cannot_fill_the_store_with_keys(
    ks: KeySentry, keys: dict[str, IssuedKey], clock: FakeClock
) -> None:
    def signed_in(owner: str) -> Browser:
        browser = Browser(pages_app(ks, max_keys=3))
        assert browser.open_link(ks.create_portal_session("shop", owner).url).status_code == 200
        return browser

    def created(browser: Browser, name: str) -> Any:
        return browser.post("/portal/keys", {"name": name})

    def owned(owner: str) -> list[Any]:
        return [k for k in ks.list_api_keys("shop") if k.owner_user_id == owner]

    alice = signed_in("alice")  # who holds one key already
    assert created(alice, "second").status_code == 200
    assert created(alice, "third").status_code == 200
    full = created(alice, "fourth")
    assert full.status_code == 422
    assert errors(full.text) == ["You have 3 keys, the most allowed: revoke one you no longer use."]
    assert len(owned("alice")) == 3
    assert created(signed_in("carol"), "hers").status_code == 200  # the cap is per customer

    second = next(k for k in owned("alice") if k.name == "second")
    assert alice.post(f"/portal/keys/{second.id}/revoke", {"reason": ""}).status_code == 200
    again = created(alice, "fourth")  # room again, but not a fourth creation in a day
    assert errors(again.text) == [
        "You created 3 keys in the last day, the most allowed: try tomorrow."
    ]
    clock.now = T0 + 86_401  # alice's first key was created at T0, and the others since
    assert created(signed_in("alice"), "fourth").status_code == 200
    assert sum(k.revoked_at is None for k in owned("alice")) == 3


@pytest.mark.parametrize("bad", [0, 10_001, True, "5", 2.0])
def test_max_keys_is_checked(ks: KeySentry, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_keys"):
        create_portal_app(ks, max_keys=bad)


def test_the_app_ends_a_customers_portal_sessions(
    ks: KeySentry, keys: dict[str, IssuedKey]
) -> None:
    # the customer is removed: their keys are revoked, and their open portal session must not
    # go on creating new ones
    alice, bob = enter(ks, "alice"), enter(ks, "bob")
    waiting = ks.create_portal_session("shop", "alice")  # minted, not yet opened
    assert alice.get("/portal/").status_code == 200  # the form's token is fresh
    assert ks.end_portal_sessions("shop", "alice") == 2
    before = len(ks.list_api_keys("shop"))
    page = alice.post("/portal/keys", {"name": "after removal"})
    assert page.status_code == 401
    assert len(ks.list_api_keys("shop")) == before
    target = keys["alice"].key.id
    assert alice.post(f"/portal/keys/{target}/revoke", {"reason": "x"}).status_code == 401
    assert ks.get_api_key(target).revoked_at is None
    assert alice.get("/portal/").status_code == 401
    assert alice.get(f"/portal/keys/{target}").status_code == 401
    assert Browser(pages_app(ks)).open_link(waiting.url).status_code == 403
    assert bob.get("/portal/").status_code == 200  # another customer's session goes on
