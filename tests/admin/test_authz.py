"""Verification over HTTP: /v1/authz/check (Wacht's gateway request) and forward-auth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from starlette.testclient import TestClient

from keysentry import ConfigurationError, KeySentry, RateLimitRule
from keysentry.admin import create_admin_app, create_admin_key
from keysentry.testing import FakeClock


class World:
    def __init__(self, ks: KeySentry, clock: FakeClock) -> None:
        self.ks = ks
        self.clock = clock
        ks.create_rate_limit_scheme("two", "Two", [RateLimitRule(unit="minute", max_requests=2)])
        ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["orders:*"],
                               resources=["orders/*"], rate_limit_scheme_slug="two")  # fmt: skip
        issued = ks.create_api_key(
            "shop", "Résumé bot", permissions=["orders:read"], metadata={"team": "billing"},
            owner_user_id="usr\r\nX: 1",
        )  # fmt: skip
        self.key, self.key_id = issued.secret, issued.key.id
        self.admin = create_admin_key(ks).secret
        # the proxy calls forward-auth from this machine, as nginx's auth_request does
        self.client = TestClient(create_admin_app(ks), client=("127.0.0.1", 50000))

    def check(self, body: dict[str, Any], key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key or self.admin}"}
        return self.client.post("/v1/authz/check", json=body, headers=headers)

    def forward(self, path: str = "/v1/authz/forward", key: str | None = None,
                **headers: str) -> Any:  # fmt: skip
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        return self.client.get(path, headers=sent)


@pytest.fixture
def world() -> Iterator[World]:
    clock = FakeClock()
    with KeySentry("memory://", clock=clock) as ks:
        world = World(ks, clock)
        with world.client:  # one event loop thread for the test, not one per request
            yield world


def request(world: World, **overrides: Any) -> dict[str, Any]:
    body = {"principal": {"type": "api_key", "value": world.key}, "method": "GET",
            "resource": "/orders/7", "client_ip": "203.0.113.9",
            "required_permissions": ["orders:read"]}  # fmt: skip
    return body | overrides


def test_check_allowed_answers_wachts_fields(world: World) -> None:
    response = world.check(request(world))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"allowed", "status", "reason", "identity", "permissions", "metadata",
                         "rate_limits", "retry_after", "headers"}  # fmt: skip
    assert body["allowed"] is True
    assert (body["status"], body["reason"]) == (200, "ok")
    assert body["identity"]["key_id"] == world.key_id
    assert body["identity"]["app_slug"] == "shop"
    assert body["permissions"] == ["orders:read"]
    assert body["metadata"] == {"team": "billing"}
    reset = 60 - int(world.clock()) % 60  # seconds to the end of this minute's window
    assert body["rate_limits"] == [
        {"policy": "2/minute:per_key", "limit": 2, "remaining": 1, "reset": reset}
    ]
    assert body["retry_after"] is None
    assert body["headers"]["x-ratelimit-remaining"] == "1"


@pytest.mark.parametrize(
    ("overrides", "status", "reason"),
    [
        ({"required_permissions": ["orders:write"]}, 403, "permission_denied"),
        ({"resource": "/users/1"}, 403, "resource_denied"),
        ({"resource": "orders/7"}, 200, "ok"),  # no leading slash: the same path
        ({"principal": {"type": "api_key", "value": "sk_shop_nope"}}, 401, "invalid_key"),
        ({"resource": "/orders/../admin"}, 400, "invalid_path"),
    ],
)
def test_check_refusals(world: World, overrides: dict[str, Any], status: int, reason: str) -> None:
    body = world.check(request(world, **overrides)).json()
    assert (body["allowed"], body["status"], body["reason"]) == (status == 200, status, reason)


def test_check_rate_limit_and_revocation(world: World) -> None:
    for _ in range(2):
        assert world.check(request(world)).json()["allowed"]
    body = world.check(request(world)).json()
    assert (body["status"], body["reason"]) == (429, "rate_limited")
    assert body["retry_after"] == int(body["headers"]["retry-after"]) > 0
    world.ks.revoke_api_key(world.key_id)
    assert world.check(request(world)).json()["reason"] == "key_revoked"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"principal": {"type": "jwt", "value": "x"}}, 422, "principal.type"),
        ({"principal": {"type": "api_key"}}, 422, "principal.value"),
        ({"principal": {"type": "api_key", "value": "k"}, "client_ip": "nope"}, 422,
         "client_ip"),
        ({"principal": {"type": "api_key", "value": "k"}, "extra": 1}, 422, "extra"),
    ],
)  # fmt: skip
def test_check_bad_requests_name_the_field(
    world: World, body: dict[str, Any], status: int, field: str
) -> None:
    response = world.check(body)
    assert response.status_code == status
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_check_needs_a_verify_key_unless_open(world: World) -> None:
    assert world.client.post("/v1/authz/check", json=request(world)).status_code == 401
    assert world.check(request(world), key=world.key).status_code == 403  # a customer key
    open_client = TestClient(create_admin_app(world.ks, open_verification=True))
    response = open_client.post("/v1/authz/check", json=request(world))
    assert response.status_code == 200
    assert response.json()["allowed"] is True


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/authz/forward?permission=orders:read",  # Traefik forwardAuth
         {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/orders/7?page=2"}),
        ("/v1/authz/forward?permission=orders:read",  # nginx auth_request
         {"X-Original-Method": "GET", "X-Original-URI": "/orders/7"}),
        ("/v1/authz/forward/orders/7?permission=orders:read", {}),  # Envoy path_prefix
    ],
)  # fmt: skip
def test_forward_auth_conventions(world: World, path: str, headers: dict[str, str]) -> None:
    allowed = world.client.get(path, headers={"Authorization": f"Bearer {world.key}", **headers})
    assert allowed.status_code == 200
    assert allowed.content == b""
    assert allowed.headers["x-keysentry-key-id"] == world.key_id
    assert allowed.headers["x-keysentry-app-slug"] == "shop"
    assert allowed.headers["x-keysentry-permissions"] == "orders:read"
    assert allowed.headers["x-ratelimit-remaining"] == "1"
    # the same request to a resource the app does not grant
    elsewhere = {k: v.replace("/orders/7", "/users/7") for k, v in headers.items()}
    denied = world.client.get(
        path.replace("/orders/7", "/users/7"),
        headers={"Authorization": f"Bearer {world.key}", **elsewhere},
    )
    assert denied.status_code == 403
    assert denied.headers["x-keysentry-reason"] == "resource_denied"
    assert json.loads(denied.headers["x-keysentry-error"]) == denied.json()


def test_forward_identity_headers_are_safe(world: World) -> None:
    response = world.forward(key=world.key, X_Forwarded_Uri="/orders/1")
    # CR/LF and non-ASCII are percent-encoded: no header injection, no latin-1 surprises
    assert response.headers["x-keysentry-owner-user-id"] == "usr%0D%0AX: 1"
    assert unquote(response.headers["x-keysentry-key-name"]) == "Résumé bot"
    assert "x" not in response.headers  # no injected header


def test_forward_refusals_and_nginx_compat(world: World) -> None:
    missing = world.forward(X_Forwarded_Uri="/orders/1")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    for _ in range(2):
        assert world.forward(key=world.key, X_Forwarded_Uri="/orders/1").status_code == 200
    limited = world.forward(key=world.key, X_Forwarded_Uri="/orders/1")
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    # nginx passes only 401 and 403 on: the real status travels in a header
    nginx = world.forward("/v1/authz/forward?compat=nginx", key=world.key,
                          X_Original_URI="/orders/1")  # fmt: skip
    assert nginx.status_code == 403
    assert nginx.headers["x-keysentry-status"] == "429"
    assert nginx.headers["retry-after"] == limited.headers["retry-after"]
    bad = world.client.get("/v1/authz/forward?permission=a%20b")
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "permission"


def test_forward_reads_an_api_key_header_only_when_asked(world: World) -> None:
    headers = {"X-API-Key": world.key, "X-Forwarded-Uri": "/orders/1"}
    assert world.client.get("/v1/authz/forward", headers=headers).status_code == 401
    asked = world.client.get("/v1/authz/forward?api_key_header=x-api-key", headers=headers)
    assert asked.status_code == 200


def test_forward_per_ip_limits_use_the_proxys_hop(world: World) -> None:
    world.ks.update_rate_limit_scheme(
        "two", rules=[RateLimitRule(unit="minute", max_requests=1, mode="per_key_and_ip")]
    )
    for ip in ("198.51.100.1", "198.51.100.2"):
        # the right-most X-Forwarded-For hop is what the proxy saw; the rest is the client's
        headers = {"X-Forwarded-Uri": "/orders/1", "X-Forwarded-For": f"6.6.6.6, {ip}"}
        response = world.forward(key=world.key, **{k.replace("-", "_"): v
                                                    for k, v in headers.items()})  # fmt: skip
        assert response.status_code == 200, ip


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP"])
def test_forward_ignores_forwarding_headers_from_an_untrusted_caller(
    world: World, header: str
) -> None:
    # a client that reaches forward-auth directly cannot pick a fresh address per request
    world.ks.update_rate_limit_scheme(
        "two", rules=[RateLimitRule(unit="minute", max_requests=1, mode="per_key_and_ip")]
    )
    direct = TestClient(create_admin_app(world.ks), client=("203.0.113.50", 40000))
    statuses = [
        direct.get("/v1/authz/forward", headers={
            "Authorization": f"Bearer {world.key}", "X-Forwarded-Uri": "/orders/1",
            header: f"198.51.100.{n}",
        }).status_code
        for n in (1, 2)
    ]  # fmt: skip
    assert statuses == [200, 429]


def test_forward_trusts_the_proxies_it_is_given(world: World) -> None:
    world.ks.update_rate_limit_scheme(
        "two", rules=[RateLimitRule(unit="minute", max_requests=1, mode="per_key_and_ip")]
    )
    app = create_admin_app(world.ks, trusted_proxies=["10.0.0.0/8"])
    proxy = TestClient(app, client=("10.1.2.3", 40000))
    statuses = [
        proxy.get("/v1/authz/forward", headers={
            "Authorization": f"Bearer {world.key}", "X-Forwarded-Uri": "/orders/1",
            "X-Real-IP": f"198.51.100.{n}",
        }).status_code
        for n in (1, 2)
    ]  # fmt: skip
    assert statuses == [200, 200]
    with pytest.raises(ConfigurationError, match="trusted_proxies"):
        create_admin_app(world.ks, trusted_proxies=["not-an-ip"])


def test_keysentry_serve_reads_its_trusted_proxies_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keysentry.server import TRUSTED_PROXIES_ENV, app_from_env

    url = f"sqlite:///{tmp_path / 'ks.db'}"
    with KeySentry(url) as ks:
        ks.create_rate_limit_scheme("one", "One", [RateLimitRule(
            unit="minute", max_requests=1, mode="per_key_and_ip")])  # fmt: skip
        ks.create_api_auth_app("shop", "Shop", "sk_shop", rate_limit_scheme_slug="one")
        key = ks.create_api_key("shop", "k").secret
    monkeypatch.setenv("KEYSENTRY_DATABASE_URL", url)
    monkeypatch.setenv(TRUSTED_PROXIES_ENV, "10.0.0.0/8, 192.0.2.1")
    with TestClient(app_from_env(), client=("10.9.9.9", 40000)) as proxy:
        statuses = [
            proxy.get("/v1/authz/forward", headers={
                "Authorization": f"Bearer {key}", "X-Forwarded-For": f"198.51.100.{n}",
            }).status_code
            for n in (1, 2)
        ]  # fmt: skip
    assert statuses == [200, 200]  # two clients behind a trusted proxy: one request each


def test_cli_serve_refuses_a_bad_trusted_proxy_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from keysentry.cli import main

    url = f"sqlite:///{tmp_path / 'ks.db'}"
    assert main(["serve", "--database-url", url, "--trusted-proxy", "not-an-ip"]) == 1
    assert "'not-an-ip' is not an IP address or network" in capsys.readouterr().err
