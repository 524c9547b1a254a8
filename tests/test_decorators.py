"""ks.require and ks.depends beyond the shared behaviour table."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from keysentry import ConfigurationError, KeySentry
from keysentry.asgi import KeySentryMiddleware
from keysentry.core.decision import Identity
from keysentry.fastapi import install


@pytest.fixture
def ks() -> KeySentry:
    sentry = KeySentry("memory://")
    sentry.create_api_auth_app(
        app_slug="api", name="API", key_prefix="sk_live",
        permissions=["users:*"], resources=["users/*"],
    )  # fmt: skip
    return sentry


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_resource_template_is_filled_from_path_parameters(ks: KeySentry) -> None:
    @ks.require("users:read", resource="users/{user_id}")
    async def user(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @ks.require("users:read", resource="accounts/{account_id}")
    async def account(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/api/v1/users/{user_id}", user),
                            Route("/api/v1/accounts/{account_id}", account)])  # fmt: skip
    secret = ks.create_api_key("api", "k", permissions=["users:read"]).secret
    with TestClient(app) as client:
        assert client.get("/api/v1/users/42", headers=bearer(secret)).status_code == 200
        denied = client.get("/api/v1/accounts/7", headers=bearer(secret))
        assert denied.json()["errors"][0]["reason"] == "resource_denied"


def test_template_naming_a_missing_parameter_is_503_not_500(ks: KeySentry) -> None:
    @ks.require(resource="users/{nope}")
    async def user(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/users/{user_id}", user)])
    secret = ks.create_api_key("api", "k").secret
    with TestClient(app) as client:
        assert client.get("/users/1", headers=bearer(secret)).status_code == 503


def test_flask_resource_templates_are_filled_from_the_view_arguments(ks: KeySentry) -> None:
    # a route's view arguments fill the template; a route without any, or one naming an
    # argument the route does not have, is a 503 (logged), not a 500 nor an open door
    from flask import Flask

    app = Flask(__name__)

    @app.route("/users/<user_id>")
    @ks.require("users:read", resource="users/{user_id}")
    def user(user_id: str) -> str:
        return "ok"

    @app.route("/accounts/<account_id>")
    @ks.require("users:read", resource="accounts/{account_id}")
    def account(account_id: str) -> str:
        return "ok"

    @app.route("/me")
    @ks.require("users:read", resource="users/{user_id}")
    def me() -> str:
        return "ok"

    secret = ks.create_api_key("api", "k", permissions=["users:read"]).secret
    client = app.test_client()
    assert client.get("/users/42", headers=bearer(secret)).status_code == 200
    denied = client.get("/accounts/7", headers=bearer(secret))
    assert denied.status_code == 403
    assert denied.get_json()["errors"][0]["reason"] == "resource_denied"
    assert client.get("/me", headers=bearer(secret)).status_code == 503


def test_behind_middleware_the_decorator_reuses_the_identity(ks: KeySentry) -> None:
    finds = []
    real = ks.store.find_keys
    ks.store.find_keys = lambda p, s: finds.append(1) or real(p, s)  # type: ignore[method-assign]

    @ks.require("users:write")
    async def write(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/users/{user_id}", write)])
    app.add_middleware(KeySentryMiddleware, sentry=ks)
    reader = ks.create_api_key("api", "r", permissions=["users:read"]).secret
    writer = ks.create_api_key("api", "w", permissions=["users:write"]).secret
    with TestClient(app) as client:
        refused = client.get("/users/1", headers=bearer(reader))
        assert refused.json()["errors"][0]["reason"] == "permission_denied"
        assert "users:write" in refused.json()["errors"][0]["message"]
        assert client.get("/users/1", headers=bearer(writer)).status_code == 200
    assert len(finds) == 2  # one lookup per key, by the middleware; none by the decorator


def test_fastapi_openapi_shows_bearer_auth_and_hides_the_injected_request(
    ks: KeySentry,
) -> None:
    app = FastAPI()
    install(app)

    @app.get("/users/{user_id}")
    async def user(
        user_id: int,
        key: Identity = Depends(ks.depends("users:read")),  # noqa: B008
    ) -> Any:
        return {"user": user_id, "key": key.key_id}

    @app.get("/users/plain/{n}")
    @ks.require("users:read")
    async def plain(n: int) -> Any:
        return {"n": n}

    secret = ks.create_api_key("api", "k", permissions=["users:read"]).secret
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["ApiKey"] == {
            "type": "http", "scheme": "bearer",
            "description": "An API key issued by keysentry: `Authorization: Bearer <key>`.",
        }  # fmt: skip
        assert spec["paths"]["/users/{user_id}"]["get"]["security"] == [{"ApiKey": []}]
        params = [p["name"] for p in spec["paths"]["/users/plain/{n}"]["get"]["parameters"]]
        assert params == ["n"]
        assert client.get("/users/plain/3", headers=bearer(secret)).json() == {"n": 3}
        assert client.get("/users/5", headers=bearer(secret)).json()["user"] == 5
        refused = client.get("/users/5")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["errors"][0]["reason"] == "missing_key"


def test_fastapi_dependency_headers_appear_once_and_replace_a_dependencys_own(
    ks: KeySentry,
) -> None:
    ks.create_rate_limit_scheme("five", "Five", [{"unit": "minute", "max_requests": 5}])
    ks.create_api_auth_app(app_slug="metered", name="Metered", key_prefix="sk_met",
                           permissions=["users:*"], rate_limit_scheme_slug="five")  # fmt: skip
    secret = ks.create_api_key("metered", "k").secret

    def stamped(response: Response) -> None:  # a dependency of the app's own, run first
        response.headers["x-ratelimit-limit"] = "999"
        response.headers["x-served-by"] = "here"

    app = FastAPI()

    @app.get("/plain")
    async def plain(key: Identity = Depends(ks.depends("users:read"))) -> Any:  # noqa: B008
        return {}

    @app.get("/stamped", dependencies=[Depends(stamped)])
    async def stamped_route(
        key: Identity = Depends(ks.depends("users:read")),  # noqa: B008
    ) -> Any:
        return {}

    with TestClient(app) as client:
        for path, remaining in (("/plain", "4"), ("/stamped", "3")):
            reply = client.get(path, headers=bearer(secret))
            names = [name.lower() for name, _ in reply.headers.items()]
            for header in ("ratelimit-policy", "ratelimit", "x-ratelimit-limit",
                           "x-ratelimit-remaining", "x-ratelimit-reset"):  # fmt: skip
                assert names.count(header) == 1, (path, header)
            assert reply.headers["x-ratelimit-limit"] == "5"
            assert reply.headers["x-ratelimit-remaining"] == remaining
        assert reply.headers["x-served-by"] == "here"


def test_fastapi_dependency_can_be_overridden_and_shared_by_a_router(ks: KeySentry) -> None:
    # the dependency is an object (its own OpenAPI scheme), usable as any FastAPI dependency:
    # in a route's dependencies, and as a key of app.dependency_overrides
    from fastapi import APIRouter

    reader = ks.depends("users:read")
    router = APIRouter(dependencies=[Depends(reader)])

    @router.get("/users/guarded")
    async def guarded() -> Any:
        return {"ok": True}

    app = FastAPI()
    app.include_router(router)

    @app.get("/users/me")
    async def me(key: Identity = Depends(reader)) -> Any:  # noqa: B008
        return {"key": key.key_id}

    secret = ks.create_api_key("api", "k", permissions=["users:read"])
    with TestClient(app) as client:
        assert client.get("/users/guarded").status_code == 401
        assert client.get("/users/guarded", headers=bearer(secret.secret)).json() == {"ok": True}
        assert client.get("/users/me", headers=bearer(secret.secret)).json() == {
            "key": secret.key.id
        }
        stand_in = Identity("key_test", "stand-in", "api", ("users:read",), (), {})
        app.dependency_overrides[reader] = lambda: stand_in
        assert client.get("/users/me").json() == {"key": "key_test"}
        assert client.get("/users/guarded").json() == {"ok": True}
        assert client.get("/openapi.json").json()["paths"]["/users/me"]["get"]["security"] == [
            {"ApiKey": []}
        ]


def test_require_headers_replace_the_handlers_own_of_the_same_name(ks: KeySentry) -> None:
    ks.create_rate_limit_scheme("five", "Five", [{"unit": "minute", "max_requests": 5}])
    ks.create_api_auth_app(app_slug="metered", name="Metered", key_prefix="sk_met",
                           permissions=["users:*"], rate_limit_scheme_slug="five")  # fmt: skip
    secret = ks.create_api_key("metered", "k").secret

    @ks.require("users:read")
    async def user(request: Request) -> JSONResponse:
        # X-Credits-Remaining: a name a verdict may set, but this key's (no credits) does not
        return JSONResponse({}, headers={"X-RateLimit-Limit": "999", "X-Served-By": "here",
                                         "X-Credits-Remaining": "7"})  # fmt: skip

    app = Starlette(routes=[Route("/users/{n}", user)])
    with TestClient(app) as client:
        reply = client.get("/users/1", headers=bearer(secret))
    names = [name.lower() for name, _ in reply.headers.items()]
    assert names.count("x-ratelimit-limit") == 1
    assert reply.headers["x-ratelimit-limit"] == "5"
    assert reply.headers["x-ratelimit-remaining"] == "4"
    assert reply.headers["x-served-by"] == "here"
    assert reply.headers["x-credits-remaining"] == "7"
    assert reply.headers["content-type"] == "application/json"


def test_fastapi_without_install_still_answers_the_right_status(ks: KeySentry) -> None:
    app = FastAPI()

    @app.get("/x")
    async def x(
        key: Identity = Depends(ks.depends("users:read")),  # noqa: B008
    ) -> Any:
        return {}

    with TestClient(app) as client:
        r = client.get("/x")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "args", [pytest.param(("a b",), id="space"), pytest.param(("",), id="empty")]
)
def test_bad_permissions_fail_at_decoration(ks: KeySentry, args: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError):
        ks.require(*args)
    with pytest.raises(ConfigurationError):
        ks.depends(*args)


def _rated(ks: KeySentry) -> str:
    ks.create_rate_limit_scheme("ten", "Ten", [{"unit": "minute", "max_requests": 10}])
    ks.update_api_auth_app("api", rate_limit_scheme_slug="ten")
    return ks.create_api_key("api", "k", permissions=["users:read"]).secret


def test_fastapi_handler_under_require_returning_data_gets_rate_headers(ks: KeySentry) -> None:
    # FastAPI serialises the returned dict itself; the decorator gives its headers to the
    # Response FastAPI passes in, which FastAPI merges into the answer
    app = FastAPI()

    @app.get("/users/{user_id}")
    @ks.require("users:read", resource="users/{user_id}")
    async def user(user_id: int) -> Any:
        return {"user": user_id}

    @app.get("/users/sync/{user_id}")
    @ks.require("users:read")
    def sync_user(user_id: int) -> Any:
        return {"user": user_id}

    secret = _rated(ks)
    with TestClient(app) as client:
        first = client.get("/users/1", headers=bearer(secret))
        second = client.get("/users/sync/1", headers=bearer(secret))
        params = client.get("/openapi.json").json()["paths"]["/users/{user_id}"]["get"]
    assert first.json() == {"user": 1}
    assert first.headers["x-ratelimit-remaining"] == "9"
    assert second.headers["x-ratelimit-remaining"] == "8"
    assert second.headers["ratelimit-policy"] == '"10/minute:per_key";q=10;w=60'
    assert [p["name"] for p in params["parameters"]] == ["user_id"]  # nothing injected shows


def test_require_and_depends_read_an_api_key_header_when_asked(ks: KeySentry) -> None:
    app = FastAPI()
    install(app)

    @app.get("/users/header/{n}")
    @ks.require("users:read", api_key_header="X-API-Key")
    async def with_header(n: int) -> Any:
        return {"n": n}

    @app.get("/users/plain2/{n}")
    @ks.require("users:read")
    async def without(n: int) -> Any:
        return {"n": n}

    @app.get("/users/either/{n}")
    @ks.require("users:read", api_key_header="X-API-Key", read_authorization=True)
    async def with_either(n: int) -> Any:
        return {"n": n}

    either_dependency = ks.depends("users:read", api_key_header="X-API-Key",
                                   read_authorization=True)  # fmt: skip

    @app.get("/users/either-depends/{n}")
    async def either_depends(
        n: int,
        key: Identity = Depends(either_dependency),  # noqa: B008
    ) -> Any:
        return {"n": n}

    @app.get("/users/depends/{n}")
    async def depends(
        n: int,
        key: Identity = Depends(ks.depends("users:read", api_key_header="X-API-Key")),  # noqa: B008
    ) -> Any:
        return {"n": n, "key": key.key_id}

    issued = ks.create_api_key("api", "k", permissions=["users:read"])
    header = {"X-API-Key": issued.secret}
    with TestClient(app) as client:
        assert client.get("/users/header/1", headers=header).json() == {"n": 1}
        depended = client.get("/users/depends/2", headers=header).json()
        assert depended == {"n": 2, "key": issued.key.id}
        assert client.get("/users/plain2/3", headers=header).status_code == 401  # not asked to
        # the app's own bearer token beside the key: Authorization is the app's, not read
        apps_own = {**header, "Authorization": "Bearer the-apps-own-session-token"}
        assert client.get("/users/header/1", headers=apps_own).json() == {"n": 1}
        assert client.get("/users/depends/2", headers=apps_own).status_code == 200
        bearer_only = {"Authorization": f"Bearer {issued.secret}"}
        assert client.get("/users/header/1", headers=bearer_only).status_code == 401
        assert client.get("/users/either/1", headers=bearer_only).json() == {"n": 1}
        disagreeing = {**header, "Authorization": "Bearer sk_live_" + "0" * 38}
        assert client.get("/users/either/1", headers=disagreeing).status_code == 401
        spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKeyHeader"]["name"] == "X-API-Key"
    assert spec["paths"]["/users/depends/{n}"]["get"]["security"] == [{"ApiKeyHeader": []}]
    either = [{"ApiKey": []}, {"ApiKeyHeader": []}]  # OpenAPI: one of them suffices
    assert spec["paths"]["/users/either-depends/{n}"]["get"]["security"] == either


def test_flask_require_reads_an_api_key_header_when_asked(ks: KeySentry) -> None:
    from flask import Flask

    app = Flask("t")

    @app.get("/users/<user_id>")
    @ks.require("users:read", api_key_header="X-API-Key")
    def user(user_id: str) -> Any:
        return {"user": user_id}

    secret = ks.create_api_key("api", "k", permissions=["users:read"]).secret
    client = app.test_client()
    assert client.get("/users/4", headers={"X-API-Key": secret}).json == {"user": "4"}
    assert client.get("/users/4").status_code == 401


@pytest.mark.parametrize("header", ["X API", "", "Authorization", "cookie", 7])
def test_a_bad_api_key_header_fails_at_decoration(ks: KeySentry, header: Any) -> None:
    with pytest.raises(ConfigurationError, match="api_key_header"):
        ks.require("users:read", api_key_header=header)
    with pytest.raises(ConfigurationError, match="api_key_header"):
        ks.depends("users:read", api_key_header=header)
