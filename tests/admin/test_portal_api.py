"""The admin API's portal routes, for apps not written in Python: a link minted over HTTP
opens the portal, and ending an owner's sessions signs them out; and what an attacker sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from keysentry import KeySentry
from keysentry.admin import create_admin_app, create_admin_key
from keysentry.portal import create_portal_app
from tests.web.helpers import Browser

SESSIONS, END = "/api-auth/portal-sessions", "/api-auth/portal-sessions/end"


class Served:
    """The admin API and the portal in one app, as ``keysentry serve`` serves them."""

    def __init__(self, ks: KeySentry) -> None:
        self.ks = ks
        self.app = Starlette(routes=[Mount("/portal", create_portal_app(ks)),
                                     Mount("/", create_admin_app(ks))])  # fmt: skip
        self.client = TestClient(self.app)
        self.headers = {"Authorization": f"Bearer {create_admin_key(ks).secret}"}

    def post(self, path: str, body: Any, **headers: str) -> Any:
        return self.client.post(path, json=body, headers=headers or self.headers)


@pytest.fixture
def served(tmp_path: Any) -> Iterator[Served]:
    with KeySentry(f"sqlite:///{tmp_path}/portal.db", usage_interval=None) as ks:
        ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["orders:read", "x:y"])
        ks.create_api_key("shop", "alice's", owner_user_id="alice")
        served = Served(ks)
        with served.client:
            yield served


def test_a_link_minted_over_http_opens_the_portal_and_ending_signs_out(served: Served) -> None:
    body = {"app_slug": "shop", "owner_user_id": "alice", "ttl_seconds": 300,
            "return_url": "/account", "permissions": ["orders:read"]}  # fmt: skip
    created = served.post(SESSIONS, body)
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["url"].startswith("/portal/t/")
    assert (session["app_slug"], session["owner_user_id"]) == ("shop", "alice")
    assert session["permissions"] == ["orders:read"]
    customer = Browser(served.app)
    assert customer.open_link(session["url"]).status_code == 200
    assert "alice&#39;s" in customer.get("/portal/").text
    assert customer.open_link(session["url"]).status_code == 403  # good once

    ended = served.post(END, {"app_slug": "shop", "owner_user_id": "alice"})
    assert ended.status_code == 200
    assert ended.json() == {"ended": 1}
    assert customer.get("/portal/").status_code == 401
    assert served.post(END, {"app_slug": "shop", "owner_user_id": "alice"}).json() == {"ended": 0}


def test_an_integer_owner_is_the_same_owner(served: Served) -> None:
    created = served.post(SESSIONS, {"app_slug": "shop", "owner_user_id": 42}).json()
    assert created["owner_user_id"] == "42"
    assert served.post(END, {"app_slug": "shop", "owner_user_id": "42"}).json() == {"ended": 1}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"owner_user_id": ""}, 422, "owner_user_id"),
        ({"ttl_seconds": 5}, 422, "ttl_seconds"),
        ({"ttl_seconds": "900"}, 422, "ttl_seconds"),
        ({"return_url": "javascript:alert(1)"}, 422, "return_url"),
        ({"return_url": "//evil.example/"}, 422, "return_url"),
        ({"permissions": ["billing:read"]}, 422, "permissions"),
        ({"path": "portal"}, 422, "path"),
        ({"app_slug": "nope"}, 404, None),
        ({"owner": "alice"}, 422, "owner"),  # an unknown field: not silently dropped
    ],
)
def test_bad_links_name_the_field(
    served: Served, body: dict[str, Any], status: int, field: str | None
) -> None:
    response = served.post(SESSIONS, {"app_slug": "shop", "owner_user_id": "alice", **body})
    assert response.status_code == status, response.text
    errors = response.json()["errors"]
    if field is not None:
        assert [e.get("field") for e in errors] == [field]
    assert "/portal/t/" not in response.text


def test_what_an_attacker_tries(served: Served) -> None:
    body = {"app_slug": "shop", "owner_user_id": "alice"}
    customer_key = served.ks.create_api_key("shop", "theirs", owner_user_id="mallory").secret
    verify_only = create_admin_key(served.ks, "scraper", verify_only=True).secret
    for path in (SESSIONS, END):
        assert served.client.post(path, json=body).status_code == 401  # no key
        for secret in (customer_key, verify_only):  # not an admin key
            refused = served.post(path, body, Authorization=f"Bearer {secret}")
            assert refused.status_code == 403
            assert "/portal/t/" not in refused.text
        assert served.client.get(path, headers=served.headers).status_code == 405
        not_json = served.client.post(path, content=b"\xff{", headers=served.headers)
        assert not_json.status_code in (400, 422)
    assert served.ks.end_portal_sessions("shop", "alice") == 0  # nothing was minted
    big = served.post(SESSIONS, {**body, "owner_user_id": "x" * 129})
    assert big.status_code == 422
    nul = served.post(END, {**body, "owner_user_id": "a\x00b"})
    assert nul.status_code == 422


def test_the_routes_are_in_the_openapi_document(served: Served) -> None:
    paths = served.client.get("/api-auth/openapi.json").json()["paths"]
    assert "post" in paths[SESSIONS]
    assert "post" in paths[END]
