"""The admin API in-process: Wacht's routes and bodies, errors, pagination, who may call it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from keysentry import ConfigurationError, KeySentry
from keysentry.admin import ADMIN_APP_SLUG, create_admin_app, create_admin_key

# The request bodies of the reference pages, as written there.
REFERENCE_001 = {
    "app_slug": "my-integration",
    "name": "My App",
    "key_prefix": "sk_live",
    "user_id": "<string>",
    "organization_id": "<string>",
    "workspace_id": "<string>",
    "description": "Production application",
    "rate_limit_scheme_slug": "default-rate-limits",
    "permissions": ["<string>"],
    "resources": ["<string>"],
}
REFERENCE_000 = {"name": "string"}
WACHT_APP_FIELDS = {
    "id", "user_id", "organization_id", "workspace_id", "app_slug", "name", "key_prefix",
    "description", "is_active", "permissions", "resources", "rate_limit_scheme_slug",
    "rate_limits", "created_at", "updated_at", "deleted_at",
}  # fmt: skip
# Wacht's key fields but deployment_id (keysentry has none) and key_hash (never served).
WACHT_KEY_FIELDS = {
    "id", "app_slug", "name", "key_prefix", "key_suffix", "permissions", "metadata",
    "rate_limits", "rate_limit_scheme_slug", "owner_user_id", "organization_id",
    "workspace_id", "organization_membership_id", "workspace_membership_id",
    "org_role_permissions", "workspace_role_permissions", "expires_at", "last_used_at",
    "is_active", "created_at", "updated_at", "revoked_at", "revoked_reason",
}  # fmt: skip


class Admin:
    def __init__(self, ks: KeySentry) -> None:
        self.ks = ks
        self.secret = create_admin_key(ks).secret
        self.client = TestClient(create_admin_app(ks))

    def __call__(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.secret}"}
        return self.client.request(method, path, json=body, headers=headers, **kwargs)


@pytest.fixture
def admin(tmp_path: Any) -> Iterator[Admin]:
    with KeySentry(f"sqlite:///{tmp_path}/admin.db") as ks:
        admin = Admin(ks)
        with admin.client:  # one event loop thread for the test, not one per request
            yield admin


def errors(response: Any) -> list[dict[str, Any]]:
    body = response.json()
    assert set(body) == {"errors"}
    for error in body["errors"]:
        assert error["code"] == response.status_code
        assert isinstance(error["message"], str)
        assert error["message"]
    return list(body["errors"])


def test_reference_001_body_is_refused_as_wacht_refuses_it(admin: Admin) -> None:
    response = admin("POST", "/api-auth/apps", REFERENCE_001)
    assert response.status_code == 422
    # Wacht: "When user_id is set, the backend rejects permissions and resources".
    assert {e["field"] for e in errors(response)} == {"permissions", "resources"}
    assert admin.ks.list_api_auth_apps()[-1].app_slug == ADMIN_APP_SLUG  # nothing written


def test_reference_bodies_create_an_app_and_a_key(admin: Admin) -> None:
    scheme = {"slug": "default-rate-limits", "name": "Default",
              "rules": [{"unit": "minute", "duration": 1, "max_requests": 100,
                         "mode": "per_key", "endpoints": ["*"], "priority": 0}]}  # fmt: skip
    assert admin("POST", "/api-auth/rate-limit-schemes", scheme).status_code == 201
    body = {k: v for k, v in REFERENCE_001.items() if k not in ("permissions", "resources")}
    response = admin("POST", "/api-auth/apps", body)
    assert response.status_code == 201, response.text
    app = response.json()
    assert set(app) == WACHT_APP_FIELDS | {"allowed_ips"}  # keysentry's one addition
    assert app["app_slug"] == "my-integration"
    assert app["user_id"] == "<string>"
    assert app["rate_limits"][0]["max_requests"] == 100  # resolved from the scheme

    response = admin("POST", "/api-auth/apps/my-integration/keys", REFERENCE_000)
    assert response.status_code == 201, response.text
    issued = response.json()
    assert set(issued) == {"key", "secret"}
    assert set(issued["key"]) >= WACHT_KEY_FIELDS
    assert "key_hash" not in issued["key"]
    assert issued["secret"].startswith("sk_live_")
    assert issued["key"]["owner_user_id"] == "<string>"  # inherited from the app
    assert admin.ks.verify(issued["secret"]).allowed


def test_wacht_sdk_examples(admin: Admin) -> None:
    # reference/002: an app with grants, and a user-attached app without them
    billing = {"app_slug": "billing-sync", "name": "Billing Sync",
               "key_prefix": "wacht_billing", "permissions": ["invoices:read", "invoices:write"],
               "resources": ["invoices/*"]}  # fmt: skip
    assert admin("POST", "/api-auth/apps", billing).status_code == 201
    user_app = {"app_slug": "user-export", "name": "User Export", "key_prefix": "wacht_export",
                "user_id": 42}  # fmt: skip
    response = admin("POST", "/api-auth/apps", user_app)
    assert response.status_code == 201
    assert response.json()["user_id"] == "42"
    # reference/004: createApiKey with owner_user_id, then revoke and rotate by api_key_id
    response = admin(
        "POST",
        "/api-auth/apps/billing-sync/keys",
        {"name": "Production Backend Key", "owner_user_id": "usr_abc123"},
    )
    key = response.json()["key"]
    assert response.status_code == 201
    assert key["owner_user_id"] == "usr_abc123"
    rotated = admin("POST", "/api-auth/keys/rotate", {"api_key_id": key["id"]})
    assert rotated.status_code == 200
    assert rotated.json()["key"]["id"] == key["id"]
    assert rotated.json()["secret"]
    revoked = admin("POST", "/api-auth/keys/revoke", {"api_key_id": key["id"],
                                                      "reason": "leaked"})  # fmt: skip
    assert revoked.status_code == 200
    assert revoked.json()["revoked_reason"] == "leaked"
    assert admin.ks.verify(rotated.json()["secret"]).status == 403


def test_every_route(admin: Admin) -> None:
    scheme = {"slug": "std", "name": "Standard", "rules": [{"unit": "second", "max_requests": 5}]}
    assert admin("POST", "/api-auth/rate-limit-schemes", scheme).status_code == 201
    assert admin("GET", "/api-auth/rate-limit-schemes/std").json()["name"] == "Standard"
    patched = admin("PATCH", "/api-auth/rate-limit-schemes/std", {"name": "Std"})
    assert patched.status_code == 200
    assert patched.json()["name"] == "Std"
    assert [s["slug"] for s in admin("GET", "/api-auth/rate-limit-schemes").json()["data"]] == [
        "std"
    ]
    app = {"app_slug": "shop", "name": "Shop", "key_prefix": "sk_shop",
           "permissions": ["orders:*"], "rate_limit_scheme_slug": "std"}  # fmt: skip
    assert admin("POST", "/api-auth/apps", app).status_code == 201
    assert admin("GET", "/api-auth/apps/shop").json()["rate_limits"][0]["max_requests"] == 5
    patched = admin("PATCH", "/api-auth/apps/shop", {"description": "the shop",
                                                     "rate_limit_scheme_slug": None})  # fmt: skip
    assert patched.json()["description"] == "the shop"
    assert patched.json()["rate_limits"] == []
    key = admin("POST", "/api-auth/apps/shop/keys", {"name": "k"}).json()["key"]
    assert admin("GET", f"/api-auth/keys/{key['id']}").json()["name"] == "k"
    assert admin("GET", "/api-auth/apps/shop/keys").json()["data"][0]["id"] == key["id"]
    # in use: 409; then delete the app, and the scheme is free
    response = admin("DELETE", "/api-auth/rate-limit-schemes/std")
    assert response.status_code == 200  # the app no longer uses it, the key never did
    deleted = admin("DELETE", "/api-auth/apps/shop")
    assert deleted.status_code == 200
    assert deleted.json()["deleted_at"] is not None
    assert admin("GET", "/api-auth/apps/shop").status_code == 404
    kinds = [e["kind"] for e in admin("GET", "/api-auth/events?after_seq=0").json()["data"]]
    assert kinds[-3:] == ["key.created", "scheme.deleted", "app.deleted"]


def test_pagination(admin: Admin) -> None:
    for n in range(7):
        admin.ks.create_api_auth_app(f"app-{n}", f"App {n}", "sk_x")
    first = admin("GET", "/api-auth/apps?limit=3").json()
    assert (first["limit"], first["offset"], first["has_more"]) == (3, 0, True)
    slugs = [a["app_slug"] for a in first["data"]]
    offset = 3
    while True:
        page = admin("GET", f"/api-auth/apps?limit=3&offset={offset}").json()
        slugs += [a["app_slug"] for a in page["data"]]
        offset += 3
        if not page["has_more"]:
            break
    assert slugs == [ADMIN_APP_SLUG] + [f"app-{n}" for n in range(7)]
    for query in ("limit=0", "limit=101", "limit=x", "offset=-1"):
        response = admin("GET", f"/api-auth/apps?{query}")
        assert response.status_code == 400
        assert errors(response)[0]["field"] == query.split("=")[0]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fields"),
    [
        ("POST", "/api-auth/apps", {"app_slug": "a", "name": "A", "key_prefix": "sk"}, 422,
         {"app_slug"}),
        ("POST", "/api-auth/apps", {"app_slug": "ok-app", "name": "A", "key_prefix": "sk_a",
                                    "colour": "red"}, 422, {"colour"}),
        ("POST", "/api-auth/apps", {"name": "A"}, 422, {"app_slug", "key_prefix"}),
        ("POST", "/api-auth/apps/nope/keys", {"name": "k"}, 404, {None}),
        ("POST", "/api-auth/keys/revoke", {"api_key_id": "key_nope"}, 404, {None}),
        ("POST", "/api-auth/keys/rotate", {"api_key_id": "k", "grace_seconds": -1}, 422,
         {"grace_seconds"}),
        ("POST", "/api-auth/rate-limit-schemes",
         {"slug": "s1", "name": "S", "rules": [{"unit": "hour", "duration": 999,
                                                "max_requests": 1}]}, 422,
         {"rules.0.duration"}),
        ("PATCH", f"/api-auth/apps/{ADMIN_APP_SLUG}", {"is_active": False}, 409, {"app_slug"}),
        ("DELETE", f"/api-auth/apps/{ADMIN_APP_SLUG}", None, 409, {"app_slug"}),
        ("PATCH", "/api-auth/rate-limit-schemes/none", {}, 422, {None}),
        ("GET", "/api-auth/nowhere", None, 404, {None}),
        ("PUT", "/api-auth/apps", None, 405, {None}),
    ],
)  # fmt: skip
def test_errors_name_the_field(
    admin: Admin, method: str, path: str, body: Any, status: int, fields: set[str | None]
) -> None:
    before = admin.ks.list_events(0, 1000)
    response = admin(method, path, body)
    assert response.status_code == status, response.text
    assert {e.get("field") for e in errors(response)} == fields
    assert admin.ks.list_events(0, 1000) == before  # nothing written


def test_malformed_bodies(admin: Admin) -> None:
    headers = {"Authorization": f"Bearer {admin.secret}", "Content-Type": "application/json"}
    post = admin.client.post
    assert post("/api-auth/apps", content=b"{not json", headers=headers).status_code == 400
    assert post("/api-auth/apps", content=b"[1, 2]", headers=headers).status_code == 400
    response = post("/api-auth/apps", content=b" " * (1 << 20) + b"{}", headers=headers)
    assert response.status_code == 413
    assert errors(response)[0]["message"].startswith("The body is larger")


def test_only_admin_keys_of_the_admin_app(admin: Admin) -> None:
    ks = admin.ks
    assert admin.client.get("/api-auth/apps").status_code == 401
    bad = admin.client.get("/api-auth/apps", headers={"Authorization": "Bearer sk_live_nope"})
    assert bad.status_code == 401
    assert errors(bad)[0]["reason"] == "invalid_key"
    # a customer app that grants everything still cannot mint admin keys
    ks.create_api_auth_app("greedy", "Greedy", "sk_greedy", permissions=["*"])
    greedy = ks.create_api_key("greedy", "all").secret
    response = admin.client.get("/api-auth/apps", headers={"Authorization": f"Bearer {greedy}"})
    assert response.status_code == 403
    assert errors(response)[0]["reason"] == "permission_denied"
    # a verify-only admin key may check keys but not manage them
    verifier = create_admin_key(ks, "verifier", verify_only=True).secret
    headers = {"Authorization": f"Bearer {verifier}"}
    assert admin.client.get("/api-auth/apps", headers=headers).status_code == 403
    check = {"principal": {"type": "api_key", "value": greedy}}
    assert admin.client.post("/v1/authz/check", json=check, headers=headers).status_code == 200
    # revoking the admin key locks it out at once
    me = ks.verify(admin.secret).identity
    assert me is not None
    assert admin("POST", "/api-auth/keys/revoke", {"api_key_id": me.key_id}).status_code == 200
    response = admin("GET", "/api-auth/apps")
    assert response.status_code == 403
    assert errors(response)[0]["reason"] == "key_revoked"


def test_openapi_document(admin: Admin) -> None:
    document = admin.client.get("/api-auth/openapi.json").json()  # no key needed
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    assert set(paths["/api-auth/apps"]) == {"post", "get"}
    assert set(paths["/api-auth/apps/{app_slug}"]) == {"get", "patch", "delete"}
    assert set(paths["/api-auth/rate-limit-schemes/{slug}"]) == {"get", "patch", "delete"}
    assert "/api-auth/keys/revoke" in paths
    assert "/api-auth/keys/rotate" in paths
    assert "/v1/authz/check" in paths
    schemas = document["components"]["schemas"]
    create = schemas["CreateAppRequest"]
    assert create["additionalProperties"] is False
    assert set(create["required"]) == {"app_slug", "name", "key_prefix"}
    assert set(schemas["ApiAuthApp"]["properties"]) == WACHT_APP_FIELDS | {"allowed_ips"}
    # every route the app serves is in the document, and the other way round
    served = {
        (route.path, method.lower())
        for route in admin.client.app.routes  # type: ignore[attr-defined]
        for method in (route.methods or ()) - {"HEAD"}
        if not route.path.startswith(("/v1/authz/forward", "/api-auth/openapi"))
    }
    documented = {(path, method) for path, ops in paths.items() for method in ops}
    assert served == documented


def test_last_used_at_appears_once_written(admin: Admin) -> None:
    admin.ks.create_api_auth_app("shop", "Shop", "sk_shop")
    issued = admin.ks.create_api_key("shop", "k")
    path = f"/api-auth/keys/{issued.key.id}"
    assert admin("GET", path).json()["last_used_at"] is None
    assert admin.ks.verify(issued.secret).allowed
    admin.ks.usage.flush()  # what the writer thread does every usage_interval
    used = admin("GET", path).json()["last_used_at"]
    assert used is not None
    assert used.endswith("Z")
    listed = admin("GET", "/api-auth/apps/shop/keys").json()["data"]
    assert [k["last_used_at"] for k in listed] == [used]


@pytest.mark.parametrize(
    "flag", ["verification", "open_verification", "close_on_shutdown", "metrics", "open_metrics"]
)
def test_a_flag_that_is_not_a_bool_is_named(flag: str) -> None:
    # "false" read from the environment is truthy: open_verification would open the check
    with KeySentry("memory://") as ks, pytest.raises(ConfigurationError, match=f"{flag} must be"):
        create_admin_app(ks, **{flag: "false"})
