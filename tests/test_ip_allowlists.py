"""IP allowlists on apps and keys: a key is usable only from its own networks (which lie
within its app's), else its app's; outside them 403 ``ip_denied``; the client address by the
same trusted-proxy rule as per-IP rate limits; malformed or too-wide lists are field errors
and nothing is written."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keysentry import KeySentry, ValidationError
from keysentry.asgi import KeySentryMiddleware
from keysentry.wsgi import KeySentryWSGIMiddleware
from tests.adapters.support import asgi_caller, wsgi_caller


@pytest.fixture
def ks() -> Iterator[KeySentry]:
    with KeySentry("memory://", usage_interval=None) as sentry:
        sentry.create_api_auth_app("office", "Office", "sk_office",
                                   allowed_ips=["10.0.0.0/8", "2001:db8::/32"])  # fmt: skip
        sentry.create_api_auth_app("open", "Open", "sk_open")
        yield sentry


@pytest.mark.parametrize(
    ("client_ip", "allowed"),
    [("10.1.2.3", True), ("10.255.255.255", True), ("11.0.0.1", False),
     ("2001:db8::7", True), ("2001:db9::7", False), ("::ffff:10.0.0.1", True),
     ("::ffff:11.0.0.1", False), (None, False), ("", False), ("not-an-ip", False),
     ("10.1.2.3%eth0", False)],
)  # fmt: skip
def test_the_apps_list_applies_to_its_keys(
    ks: KeySentry, client_ip: str | None, allowed: bool
) -> None:
    secret = ks.create_api_key("office", "k").secret
    decision = ks.verify(secret, client_ip=client_ip)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason == "ip_denied"
        assert decision.reason.status == 403


def test_lists_are_stored_on_every_sql_store(sql_url: str) -> None:
    with KeySentry(sql_url, usage_interval=None) as ks:
        ks.create_api_auth_app("office", "Office", "sk_office", allowed_ips=["10.0.0.0/8"])
        issued = ks.create_api_key("office", "lab", allowed_ips=["10.9.0.0/16", "10.9.0.0/16"])
    with KeySentry(sql_url, usage_interval=None) as ks:  # a fresh cache
        assert ks.get_api_auth_app("office").allowed_ips == ["10.0.0.0/8"]
        assert ks.get_api_key(issued.key.id).allowed_ips == ["10.9.0.0/16"]  # repeats dropped
        assert ks.verify(issued.secret, client_ip="10.9.0.1").allowed
        assert ks.verify(issued.secret, client_ip="10.1.0.1").reason == "ip_denied"


def test_a_keys_own_list_narrows_its_apps(ks: KeySentry) -> None:
    secret = ks.create_api_key("office", "lab", allowed_ips=["10.9.0.0/16"]).secret
    assert ks.verify(secret, client_ip="10.9.1.1").allowed
    assert ks.verify(secret, client_ip="10.8.1.1").reason == "ip_denied"
    anywhere = ks.create_api_key("open", "k").secret
    assert ks.verify(anywhere, client_ip=None).allowed  # no list: any address
    pinned = ks.create_api_key("open", "pinned", allowed_ips=["203.0.113.7"]).secret
    assert ks.verify(pinned, client_ip="203.0.113.7").allowed
    assert ks.verify(pinned, client_ip="203.0.113.8").reason == "ip_denied"


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        (["10.0.0.1/8"], "'10.0.0.1/8' has host bits set: did you mean 10.0.0.0/8?"),
        (["10.0.0.0/33"], "'10.0.0.0/33' is not an IP address or CIDR network"),
        (["example.com"], "'example.com' is not an IP address or CIDR network"),
        ([" 10.0.0.0/8"], "' 10.0.0.0/8' is not an IP address or CIDR network"),
        (["10.0.0.0/8\x00"], None),
        ([42], None),
        ("10.0.0.0/8", None),
    ],
)
def test_malformed_lists_are_field_errors(
    ks: KeySentry, networks: Any, message: str | None
) -> None:
    for call in (lambda: ks.create_api_auth_app("bad", "Bad", "sk_bad", allowed_ips=networks),
                 lambda: ks.create_api_key("open", "k", allowed_ips=networks)):  # fmt: skip
        with pytest.raises(ValidationError) as caught:
            call()
        assert [e.field.split(".")[0] for e in caught.value.errors] == ["allowed_ips"]
        if message is not None:
            assert caught.value.errors[0].message == message
    assert [a.app_slug for a in ks.list_api_auth_apps()] == ["office", "open"]
    assert ks.list_api_keys("open") == []


def test_a_key_may_not_reach_outside_its_apps_list(ks: KeySentry) -> None:
    for wider in (["11.0.0.0/8"], ["0.0.0.0/0"], ["10.0.0.0/7"], ["2001:db8::/31"],
                  ["10.0.0.0/16", "192.168.0.0/16"]):  # fmt: skip
        with pytest.raises(ValidationError) as caught:
            ks.create_api_key("office", "wide", allowed_ips=wider)
        assert {e.field for e in caught.value.errors} == {"allowed_ips"}
    assert ks.list_api_keys("office") == []


def test_narrowing_an_app_may_not_leave_a_key_outside(ks: KeySentry) -> None:
    issued = ks.create_api_key("office", "lab", allowed_ips=["10.9.0.0/16"])
    with pytest.raises(ValidationError) as caught:
        ks.update_api_auth_app("office", allowed_ips=["10.1.0.0/16"])
    assert "10.9.0.0/16" in caught.value.errors[0].message
    assert ks.get_api_auth_app("office").allowed_ips == ["10.0.0.0/8", "2001:db8::/32"]
    ks.revoke_api_key(issued.key.id)  # a revoked key holds nothing back
    ks.update_api_auth_app("office", allowed_ips=["10.1.0.0/16"])
    other = ks.create_api_key("office", "k").secret
    assert ks.verify(other, client_ip="10.2.0.1").reason == "ip_denied"  # the change applies
    ks.update_api_auth_app("office", allowed_ips=None)
    assert ks.verify(other, client_ip="192.0.2.1").allowed


async def _hello(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@pytest.mark.parametrize("proxied", [False, True])
def test_the_middlewares_use_the_trusted_proxy_rule(ks: KeySentry, proxied: bool) -> None:
    secret = ks.create_api_key("office", "k").secret
    trusted = ["192.0.2.1"] if proxied else []
    asgi_app = Starlette(routes=[Route("/", _hello)], middleware=[
        Middleware(KeySentryMiddleware, sentry=ks, trusted_proxies=trusted)])  # fmt: skip
    flask = Flask(__name__)
    flask.add_url_rule("/", "hello", lambda: {"ok": True})
    flask.wsgi_app = KeySentryWSGIMiddleware(flask.wsgi_app, sentry=ks,  # type: ignore[method-assign]
                                             trusted_proxies=trusted)  # fmt: skip
    auth = {"Authorization": f"Bearer {secret}"}
    forged = {**auth, "X-Forwarded-For": "10.1.1.1"}
    with contextmanager(asgi_caller)(asgi_app, peer="192.0.2.1") as asgi:
        for call in (asgi, wsgi_caller(flask, peer="192.0.2.1")):
            reply = call("GET", "/", forged)
            # a proxy we trust tells us the client; anyone else's header is ignored
            assert reply.status == (200 if proxied else 403), reply.body
            if not proxied:
                assert reply.body["errors"][0]["reason"] == "ip_denied"
    with contextmanager(asgi_caller)(asgi_app, peer="10.3.3.3") as asgi:
        for call in (asgi, wsgi_caller(flask, peer="10.3.3.3")):
            assert call("GET", "/", auth).status == 200  # the peer itself is inside


def test_the_cli_and_the_admin_api_take_lists(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from starlette.testclient import TestClient

    from keysentry.admin import create_admin_app, create_admin_key
    from keysentry.cli import main

    url = f"sqlite:///{tmp_path}/ips.db"
    assert main(["--database-url", url, "apps", "create", "office", "--name", "Office",
                 "--key-prefix", "sk_office", "--allowed-ip", "10.0.0.0/8"]) == 0  # fmt: skip
    assert main(["--database-url", url, "keys", "create", "office", "--name", "k",
                 "--allowed-ip", "11.0.0.0/8"]) != 0  # fmt: skip
    assert "allowed_ips: '11.0.0.0/8' is not within app 'office'" in capsys.readouterr().err
    assert main(["--database-url", url, "apps", "update", "office", "--any-ip", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["allowed_ips"] == []
    with KeySentry(url) as ks:
        admin = create_admin_key(ks).secret
        client = TestClient(create_admin_app(ks), headers={"Authorization": f"Bearer {admin}"})
        body = {"app_slug": "x1", "name": "X", "key_prefix": "sk_x",
                "allowed_ips": ["10.0.0.1/8"]}  # fmt: skip
        bad = client.post("/api-auth/apps", json=body)
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "allowed_ips"
        key = {"name": "k", "allowed_ips": ["192.0.2.0/24"]}
        made = client.post("/api-auth/apps/office/keys", json=key)
        assert made.status_code == 201
        assert made.json()["key"]["allowed_ips"] == ["192.0.2.0/24"]
