"""The behaviour table: what every adapter does the same way. Not collected itself:
``test_asgi`` and ``test_wsgi`` import it and run it through their adapters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from keysentry import KeySentry
from keysentry.core.keys import generate_key
from keysentry.testing import FakeClock
from tests.adapters.support import (
    Call,
    asgi_caller,
    bearer,
    flask_app,
    reason,
    starlette_app,
    wsgi_caller,
)


def test_valid_key_gets_200_with_its_identity(call: Call, ks: KeySentry) -> None:
    issued = ks.create_api_key("internal-api", "k", permissions=["users:read"])
    reply = call("GET", "/users/42", bearer(issued.secret))
    assert reply.status == 200
    assert reply.body == {"key_id": issued.key.id, "app_slug": "internal-api",
                          "permissions": ["users:read"]}  # fmt: skip


def test_missing_key_gets_401_with_www_authenticate(call: Call) -> None:
    reply = call("GET", "/users/42")
    assert (reply.status, reason(reply)) == (401, "missing_key")
    assert reply.headers["www-authenticate"] == "Bearer"
    assert reply.body == {"errors": [{"message": reply.body["errors"][0]["message"],
                                      "code": 401, "reason": "missing_key"}]}  # fmt: skip


@pytest.mark.parametrize(
    ("setup", "method", "path", "expected"),
    [
        pytest.param("revoke", "GET", "/users/1", "key_revoked", id="revoked"),
        pytest.param("expire", "GET", "/users/1", "key_expired", id="expired"),
        pytest.param("delete_app", "GET", "/users/1", "app_disabled", id="app-deleted"),
        pytest.param("disable_app", "GET", "/users/1", "app_disabled", id="app-disabled"),
        pytest.param(None, "POST", "/users/1", "permission_denied", id="missing-permission"),
        pytest.param(None, "GET", "/orders/1", "resource_denied", id="outside-resources"),
    ],
)
def test_403_table(
    call: Call,
    ks: KeySentry,
    clock: FakeClock,
    setup: str | None,
    method: str,
    path: str,
    expected: str,
) -> None:
    expires = datetime.fromtimestamp(clock() + 60, UTC)
    issued = ks.create_api_key("internal-api", "k", permissions=["users:read"], expires_at=expires)
    assert call("GET", "/users/1", bearer(issued.secret)).status == 200  # cached now
    if setup == "revoke":
        ks.revoke_api_key(issued.key.id, reason="leaked")
    elif setup == "expire":
        clock.advance(60)
    elif setup == "delete_app":
        ks.delete_api_auth_app("internal-api")
    elif setup == "disable_app":
        ks.update_api_auth_app("internal-api", is_active=False)
    reply = call(method, path, bearer(issued.secret))
    assert (reply.status, reason(reply)) == (403, expected)
    assert "www-authenticate" not in reply.headers


# ------------------------------------------------------------------ bad input
def test_probes_without_the_secret_all_get_the_same_401(call: Call, ks: KeySentry) -> None:
    issued = ks.create_api_key("internal-api", "k")
    real = issued.secret
    one_char_off = real[:10] + ("A" if real[10] != "A" else "B") + real[11:]
    replies = [
        call("GET", "/users/1", bearer("sk_live_" + "a" * 38)),  # bad checksum
        call("GET", "/users/1", bearer(one_char_off)),  # a real key with one character changed
        call("GET", "/users/1", bearer("sk_live_nope")),
        call("GET", "/users/1", {"Authorization": "Bearer"}),
    ]
    assert {r.status for r in replies} == {401}
    assert all(r.body == replies[0].body for r in replies)
    assert all(r.headers["www-authenticate"] == replies[0].headers["www-authenticate"]
               for r in replies)  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"Authorization": "bearer {k}"}, 200, id="lowercase-scheme"),
        pytest.param({"Authorization": "BEARER {k}"}, 200, id="uppercase-scheme"),
        pytest.param({"Authorization": "Bearer \t {k}"}, 200, id="tabs-and-spaces"),
        pytest.param({"Authorization": "{k}"}, 200, id="bare-key"),
        pytest.param({"Authorization": "Bearer {k}\u00e9"}, 401, id="latin-1"),
        pytest.param({"Authorization": "Bearer " + "a" * 1_000_000}, 401, id="one-megabyte"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, 401, id="basic"),
    ],
)  # fmt: skip
def test_header_variants(call: Call, ks: KeySentry, headers: dict[str, str], status: int) -> None:
    secret = ks.create_api_key("internal-api", "k").secret
    filled = {k: v.replace("{k}", secret) for k, v in headers.items()}
    assert call("GET", "/users/1", filled).status == status


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"X-API-Key": "{k}"}, 200, id="x-api-key"),
        pytest.param({"Authorization": "Bearer {k}", "X-API-Key": "{k}"}, 200, id="both-agree"),
        pytest.param({"Authorization": "Bearer {k}", "X-API-Key": "sk_live_x"}, 401,
                     id="both-disagree"),
    ],
)  # fmt: skip
def test_x_api_key_header(
    mw_call: Call, ks: KeySentry, headers: dict[str, str], status: int
) -> None:
    secret = ks.create_api_key("internal-api", "k").secret
    filled = {k: v.replace("{k}", secret) for k, v in headers.items()}
    assert mw_call("GET", "/users/1", filled).status == status


def test_head_is_get_and_has_no_body(call: Call, ks: KeySentry) -> None:
    secret = ks.create_api_key("internal-api", "k", permissions=["users:read"]).secret
    assert call("HEAD", "/users/1", bearer(secret)).status == 200
    refused = call("HEAD", "/users/1")
    assert refused.status == 401
    assert refused.body == {"text": ""}


def test_cors_preflight_passes_without_a_key(mw_call: Call) -> None:
    preflight = {"Origin": "https://example.com", "Access-Control-Request-Method": "GET"}
    assert mw_call("OPTIONS", "/users/1", preflight).status in (200, 405)  # the app's answer
    assert mw_call("OPTIONS", "/users/1", {"Origin": "https://example.com"}).status == 401


def test_excluded_paths_pass_without_a_key(mw_call: Call) -> None:
    assert mw_call("GET", "/health").status == 200


def test_revoke_then_request_in_the_same_process_is_refused_at_once(
    call: Call, ks: KeySentry
) -> None:
    for _ in range(50):
        issued = ks.create_api_key("internal-api", "k")
        assert call("GET", "/users/1", bearer(issued.secret)).status == 200
        ks.revoke_api_key(issued.key.id)
        assert call("GET", "/users/1", bearer(issued.secret)).status == 403


def test_rotate_old_secret_401_new_secret_200(call: Call, ks: KeySentry) -> None:
    issued = ks.create_api_key("internal-api", "k")
    assert call("GET", "/users/1", bearer(issued.secret)).status == 200
    rotated = ks.rotate_api_key(issued.key.id)
    assert call("GET", "/users/1", bearer(issued.secret)).status == 401
    assert call("GET", "/users/1", bearer(rotated.secret)).status == 200


def test_bad_checksum_costs_no_store_call(call: Call, ks: KeySentry) -> None:
    # (that it costs no cache lookup either is core.pipeline's: begin() refuses it before
    # asking for one, tests/core/test_pipeline.py)
    secret = ks.create_api_key("internal-api", "k").secret
    calls = []
    real_find = ks.store.find_candidates

    def counted_find(prefix: str, suffix: str) -> Any:
        calls.append(suffix)
        return real_find(prefix, suffix)

    ks.store.find_candidates = counted_find  # type: ignore[method-assign]
    broken = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    assert call("GET", "/users/1", bearer(broken)).status == 401
    assert calls == []
    unknown = generate_key("sk_live").secret  # well-formed: this one is looked up
    assert call("GET", "/users/1", bearer(unknown)).status == 401
    assert calls == [unknown[-4:]]


def test_middleware_resource_templates(ks: KeySentry, middleware: str) -> None:
    # the resource is taken from a route template instead of the path: /orders/7 is the
    # resource "users/7" here (the first route that matches wins), other paths stay paths
    templates = {"GET /orders/{order_id}": "users/{order_id}",
                 "/orders/{order_id}/*": "nobody/{order_id}"}  # fmt: skip
    ks.update_api_auth_app("internal-api", resources=["users/7"])
    secret = ks.create_api_key("internal-api", "k").secret
    headers = {"Authorization": f"Bearer {secret}"}
    if middleware == "wsgi":
        calls = [wsgi_caller(flask_app(ks, resources=templates))]
    else:
        calls = list(asgi_caller(starlette_app(ks, resources=templates)))
    call = calls[0]
    assert call("GET", "/orders/7", headers).status == 200  # users/7
    assert call("HEAD", "/orders/7", headers).status == 200  # HEAD counts as GET
    assert call("GET", "/orders/8", headers).body["errors"][0]["reason"] == "resource_denied"
    assert call("GET", "/users/7", headers).status == 200  # no template: the path
    assert call("GET", "/users/8", headers).status == 403
