"""Portal links on every store: good once, until they expire, whichever process spends them;
minted only for a live app, a real owner and permissions the app grants."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from keysentry import KeySentry, NotFoundError, ValidationError
from keysentry.testing import FakeClock

T0 = 1_800_000_000.0


def _ks(url: str, clock: FakeClock) -> KeySentry:
    ks = KeySentry(url, clock=clock, usage_interval=None)
    ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["orders:*"])
    return ks


def _token(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_a_link_is_good_once(database_url: str) -> None:
    clock = FakeClock(T0)
    with _ks(database_url, clock) as ks:
        session = ks.create_portal_session("shop", "user_1", permissions=["orders:read"],
                                           return_url="/account")  # fmt: skip
        assert session.url.startswith("/portal/t/")
        token = _token(session.url)
        assert token not in repr(session)
        ticket = ks.redeem_portal_link(token)
        assert ticket is not None
        assert (ticket.app_slug, ticket.owner_user_id) == ("shop", "user_1")
        assert ticket.permissions == ("orders:read",)
        assert ticket.return_url == "/account"
        assert ks.redeem_portal_link(token) is None  # spent
        assert ks.redeem_portal_link(token[:-1] + ("A" if token[-1] != "A" else "B")) is None


def test_an_expired_link_is_refused(database_url: str) -> None:
    clock = FakeClock(T0)
    with _ks(database_url, clock) as ks:
        session = ks.create_portal_session("shop", 42, ttl_seconds=60)
        assert session.owner_user_id == "42"
        clock.now = T0 + 60
        assert ks.redeem_portal_link(_token(session.url)) is None


def test_of_many_concurrent_uses_one_wins(database_url: str) -> None:
    with _ks(database_url, FakeClock(T0)) as ks:
        token = _token(ks.create_portal_session("shop", "user_1").url)
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: ks.redeem_portal_link(token), range(16)))
        assert sum(ticket is not None for ticket in got) == 1


def test_the_shared_secret_is_one_per_store(database_url: str) -> None:
    with _ks(database_url, FakeClock(T0)) as ks:
        first = ks.store.shared_secret("web")
        assert len(first) >= 40
        assert ks.store.shared_secret("web") == first
        assert ks.store.shared_secret("other") != first
        if not database_url.startswith("memory"):
            with KeySentry(database_url) as again:  # another process would see the same
                assert again.store.shared_secret("web") == first


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"owner_user_id": ""}, "owner_user_id"),
        ({"ttl_seconds": 5}, "ttl_seconds"),
        ({"ttl_seconds": True}, "ttl_seconds"),
        ({"ttl_seconds": 86_401}, "ttl_seconds"),
        ({"return_url": "javascript:alert(1)"}, "return_url"),
        ({"return_url": "//evil.example/"}, "return_url"),
        ({"return_url": "https:///x"}, "return_url"),
        ({"return_url": "/a b"}, "return_url"),
        ({"return_url": "/a\\b"}, "return_url"),
        ({"permissions": ["billing:read"]}, "permissions"),
        ({"permissions": "orders:read"}, "permissions"),
        ({"path": "portal"}, "path"),
        ({"app_slug": "Not A Slug"}, "app_slug"),
    ],
)
def test_bad_sessions_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with _ks("memory://", FakeClock(T0)) as ks:
        args = {"app_slug": "shop", "owner_user_id": "user_1", **kwargs}
        with pytest.raises(ValidationError) as caught:
            ks.create_portal_session(**args)
        assert [e.field for e in caught.value.errors] == [field]


def test_good_return_urls_and_unknown_apps() -> None:
    with _ks("memory://", FakeClock(T0)) as ks:
        for url in ("/account?tab=keys", "https://example.com/back", "http://localhost:3000/"):
            assert ks.create_portal_session("shop", "u", return_url=url).return_url == url
        with pytest.raises(NotFoundError):
            ks.create_portal_session("nope", "u")
        assert ks.redeem_portal_link("short") is None


def test_ending_an_owners_sessions_on_every_store(database_url: str) -> None:
    clock = FakeClock(T0)
    with _ks(database_url, clock) as ks:
        ks.create_api_auth_app("blog", "Blog", "sk_blog")
        opened = ks.create_portal_session("shop", "alice")
        assert ks.redeem_portal_link(_token(opened.url)) is not None
        unopened = ks.create_portal_session("shop", "alice")
        bobs = ks.create_portal_session("shop", "bob")
        on_the_blog = ks.create_portal_session("blog", "alice")
        assert all(ks.portal_session_in_force(s.id) for s in (opened, unopened, bobs))
        assert ks.end_portal_sessions("shop", "alice") == 2
        assert not ks.portal_session_in_force(opened.id)
        assert ks.redeem_portal_link(_token(unopened.url)) is None  # opens nothing now
        assert ks.portal_session_in_force(bobs.id)  # another owner's, another app's: kept
        assert ks.redeem_portal_link(_token(on_the_blog.url)) is not None
        assert ks.end_portal_sessions("shop", "alice") == 0
        again = ks.create_portal_session("shop", "alice")  # a new link works as before
        assert ks.redeem_portal_link(_token(again.url)) is not None
        assert ks.portal_session_in_force(again.id)
        for unknown in ("psn_unknown", "", None, 42, "psn_\x00", "p" * 65):
            assert not ks.portal_session_in_force(unknown)


def test_a_spent_link_outlives_the_longest_session_it_started(database_url: str) -> None:
    # the session lasts while its link is stored: a day at most after it was opened, and the
    # link is kept a day past its expiry
    clock = FakeClock(T0)
    with _ks(database_url, clock) as ks:
        link = ks.create_portal_session("shop", "alice", ttl_seconds=86_400)
        clock.now = T0 + 86_399  # opened at the last moment
        assert ks.redeem_portal_link(_token(link.url)) is not None
        clock.now = T0 + 86_399 + 86_399  # its session's last second, at the longest
        ks.create_portal_session("shop", "bob")  # a new link's write forgets old ones
        assert ks.portal_session_in_force(link.id)


@pytest.mark.parametrize(
    ("args", "field"),
    [(("", "alice"), "app_slug"), ((None, "alice"), "app_slug"), (("shop", ""), "owner_user_id"),
     (("shop", True), "owner_user_id"), (("shop", "x" * 129), "owner_user_id")],
)  # fmt: skip
def test_ending_sessions_names_a_bad_field(args: tuple[Any, Any], field: str) -> None:
    with _ks("memory://", FakeClock(T0)) as ks:
        with pytest.raises(ValidationError) as caught:
            ks.end_portal_sessions(*args)
        assert [e.field for e in caught.value.errors] == [field]
