"""The admin API's usage routes: per app and per key, paged by cursor, top keys, stale keys;
and what an attacker would send them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from keysentry import KeySentry
from keysentry.admin import create_admin_app, create_admin_key
from keysentry.testing import FakeClock

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()


class World:
    def __init__(self, ks: KeySentry, clock: FakeClock) -> None:
        self.ks = ks
        self.clock = clock
        self.secret = create_admin_key(ks).secret
        self.client = TestClient(create_admin_app(ks))
        ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["orders:read"])
        ks.create_api_auth_app("blog", "Blog", "sk_blog")
        self.a = ks.create_api_key("shop", "a")
        self.b = ks.create_api_key("shop", "b")
        self.c = ks.create_api_key("blog", "c")

    def get(self, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.secret}"}
        return self.client.get(path, params=params, headers=headers)


@pytest.fixture
def world(tmp_path: Any) -> Iterator[World]:
    clock = FakeClock(T0)
    with KeySentry(f"sqlite:///{tmp_path}/a.db", clock=clock, usage_interval=None) as ks:
        world = World(ks, clock)
        with world.client:  # one event loop thread for the test, not one per request
            yield world


def _traffic(world: World) -> None:
    for minute in range(30):  # 30 minute buckets of a, 2 requests each; b once refused
        world.clock.now = T0 + 60 * minute
        world.ks.verify(world.a.secret)
        world.ks.verify(world.a.secret)
    world.ks.verify(world.b.secret, permissions="orders:write")
    world.ks.verify(world.c.secret)


def test_app_usage_by_outcome_and_key(world: World) -> None:
    _traffic(world)
    body = world.get("/api-auth/apps/shop/usage", granularity="hour", since="2h").json()
    assert body["has_more"] is False
    assert [(p["outcome"], p["count"]) for p in body["data"]] == [
        ("ok", 60),
        ("permission_denied", 1),
    ]
    assert body["data"][0]["start"] == "2026-11-30T12:00:00Z"
    by_key = world.get("/api-auth/apps/shop/usage", group_by="key", granularity="day").json()
    counts = {p["key_id"]: p["count"] for p in by_key["data"]}
    assert counts == {world.a.key.id: 60, world.b.key.id: 1}
    one = world.get(f"/api-auth/keys/{world.b.key.id}/usage", granularity="minute").json()
    assert [(p["key_id"], p["outcome"], p["count"]) for p in one["data"]] == [
        (world.b.key.id, "permission_denied", 1)
    ]
    filtered = world.get("/api-auth/apps/shop/usage", key_id=world.a.key.id).json()
    assert sum(p["count"] for p in filtered["data"]) == 60


def test_pages_walk_every_point_once(world: World) -> None:
    _traffic(world)
    seen: list[tuple[str, str]] = []
    total = 0
    params: dict[str, Any] = {"granularity": "minute", "since": "1h", "limit": "7"}
    for _ in range(10):
        page = world.get("/api-auth/apps/shop/usage", **params).json()
        seen += [(p["start"], p["outcome"]) for p in page["data"]]
        total += sum(p["count"] for p in page["data"])
        if not page["has_more"]:
            break
        params["cursor"] = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 31  # 30 minutes of "ok", one "permission_denied"
    assert total == 61


def test_top_and_stale_keys(world: World) -> None:
    _traffic(world)
    top = world.get("/api-auth/apps/shop/usage/top").json()["data"]
    assert [(t["key_id"], t["requests"], t["refused"]) for t in top] == [
        (world.a.key.id, 60, 0),
        (world.b.key.id, 1, 1),
    ]
    refused = world.get("/api-auth/apps/shop/usage/top", by="refused", limit="1").json()
    assert [t["key_id"] for t in refused["data"]] == [world.b.key.id]
    world.ks.usage.flush()
    world.clock.advance(40 * 86400)
    world.ks.verify(world.b.secret)
    never = world.ks.create_api_key("shop", "never")
    stale = world.get("/api-auth/apps/shop/keys", unused_for="30d").json()["data"]
    assert {k["name"] for k in stale} == {"a", "never"}
    assert never.secret not in str(stale)


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"granularity": "week"}, 422, "granularity"),
        ({"group_by": "path"}, 422, "group_by"),
        ({"since": "yesterday"}, 400, "since"),
        ({"since": "2026-01-01T00:00:00"}, 400, "since"),  # no timezone
        ({"until": "soon"}, 400, "until"),
        ({"since": "2030-01-01T00:00:00Z"}, 422, "since"),  # after until
        ({"since": "30d", "granularity": "minute"}, 422, "since"),  # too many buckets
        ({"since": "365d", "granularity": "hour"}, 422, "since"),  # beyond retention
        ({"limit": "0"}, 400, "limit"),
        ({"limit": "10001"}, 400, "limit"),
        ({"limit": "\u0661\u0660"}, 400, "limit"),  # Arabic-Indic digits, not ASCII
        ({"cursor": "not-a-cursor"}, 400, "cursor"),
        ({"cursor": "WyJhIiwgMV0="}, 400, "cursor"),  # base64 of ["a", 1]: wrong shapes
        ({"since": "x" * 500}, 400, "since"),
        ({"since": "24h\x00"}, 400, "since"),
    ],
)
def test_bad_queries_name_the_field(
    world: World, params: dict[str, Any], status: int, field: str
) -> None:
    response = world.get("/api-auth/apps/shop/usage", **params)
    assert response.status_code == status, response.text
    assert [e.get("field") for e in response.json()["errors"]] == [field]


def test_a_parameter_twice_is_refused(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.secret}"}
    response = world.client.get(
        "/api-auth/apps/shop/usage?granularity=hour&granularity=minute", headers=headers
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "granularity"


def test_what_an_attacker_tries(world: World) -> None:
    _traffic(world)
    # no key, a customer key, a verify-only admin key: refused before any usage is read
    assert world.client.get("/api-auth/apps/shop/usage").status_code == 401
    customer = {"Authorization": f"Bearer {world.a.secret}"}
    assert world.client.get("/api-auth/apps/shop/usage", headers=customer).status_code == 403
    verifier = create_admin_key(world.ks, "v", verify_only=True).secret
    only_verify = {"Authorization": f"Bearer {verifier}"}
    assert world.client.get("/api-auth/apps/shop/usage", headers=only_verify).status_code == 403
    # another app's key through this app's route: 422 naming key_id, no counts shown
    response = world.get("/api-auth/apps/shop/usage", key_id=world.c.key.id)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "key_id"
    assert world.get("/api-auth/apps/nope/usage").status_code == 404
    assert world.get("/api-auth/keys/key_nope/usage").status_code == 404
    assert world.get("/api-auth/apps/nope/usage/top").status_code == 404
    # a key's secret where its id goes is refused without being echoed
    leaked = world.get(f"/api-auth/keys/{world.a.secret}/usage")
    assert leaked.status_code == 422
    assert world.a.secret not in leaked.text
    # methods other than GET
    headers = {"Authorization": f"Bearer {world.secret}"}
    assert world.client.post("/api-auth/apps/shop/usage", headers=headers).status_code == 405
    assert world.client.delete("/api-auth/apps/shop/usage", headers=headers).status_code == 405


def test_the_routes_are_in_the_openapi_document(world: World) -> None:
    paths = world.client.get("/api-auth/openapi.json").json()["paths"]
    usage = paths["/api-auth/apps/{app_slug}/usage"]["get"]
    names = {p["name"] for p in usage["parameters"]}
    assert {"since", "until", "granularity", "group_by", "limit", "cursor", "key_id"} <= names
    assert "/api-auth/keys/{key_id}/usage" in paths
    assert "/api-auth/apps/{app_slug}/usage/top" in paths
    listing = {p["name"] for p in paths["/api-auth/apps/{app_slug}/keys"]["get"]["parameters"]}
    assert {"unused_for", "owner_user_id"} <= listing


def test_the_keys_list_by_owner(world: World) -> None:
    ks = world.ks
    alice = [ks.create_api_key("shop", f"alice {i}", owner_user_id="alice") for i in range(2)]
    ks.create_api_key("shop", "bob's", owner_user_id="bob")
    ks.create_api_key("blog", "alice on the blog", owner_user_id="alice")
    numeric = ks.create_api_key("shop", "by number", owner_user_id=42)
    listed = world.get("/api-auth/apps/shop/keys", owner_user_id="alice").json()["data"]
    assert sorted(k["id"] for k in listed) == sorted(k.key.id for k in alice)
    assert all(k.secret not in str(listed) for k in alice)
    by_number = world.get("/api-auth/apps/shop/keys", owner_user_id="42").json()["data"]
    assert [k["id"] for k in by_number] == [numeric.key.id]
    assert world.get("/api-auth/apps/shop/keys", owner_user_id="carol").json()["data"] == []
    assert world.get("/api-auth/apps/nope/keys", owner_user_id="alice").status_code == 404


@pytest.mark.parametrize(
    ("query", "status"),
    [("owner_user_id=", 422), ("owner_user_id=" + "x" * 129, 422),
     ("owner_user_id=a%00b", 400), ("owner_user_id=a&owner_user_id=b", 400)],
    ids=["empty", "too long", "NUL", "twice"],
)  # fmt: skip
def test_a_bad_owner_filter_names_the_field(world: World, query: str, status: int) -> None:
    headers = {"Authorization": f"Bearer {world.secret}"}
    response = world.client.get(f"/api-auth/apps/shop/keys?{query}", headers=headers)
    assert response.status_code == status, response.text
    assert [e.get("field") for e in response.json()["errors"]] == ["owner_user_id"]
