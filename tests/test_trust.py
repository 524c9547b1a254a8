"""Hostile inputs, in process: each test is an attack that once worked (method case, path
tricks past ``exclude``, role permissions past the app's cap, a secret where an id goes,
deep JSON, non-ASCII digits, NUL and NaN) and must now be refused with a 4xx naming the
field, identically on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from keysentry import KeySentry, RateLimitRule, ValidationError
from keysentry.admin import create_admin_app, create_admin_key
from keysentry.asgi import KeySentryMiddleware
from keysentry.cli import main
from keysentry.testing import FakeClock
from keysentry.wsgi import KeySentryWSGIMiddleware
from tests.conftest import POSTGRES_PARAM, sql_database

PERMISSIONS = {"DELETE /users/*": ["users:delete"], "GET /users/*": ["users:read"]}


def _asgi_app(ks: KeySentry, **options: Any) -> Starlette:
    async def user(request: Request) -> JSONResponse:
        return JSONResponse({"method": request.method})

    async def public(request: Request) -> PlainTextResponse:
        return PlainTextResponse("public")

    app = Starlette(routes=[
        Route("/users/{n}", user, methods=["GET", "DELETE", "POST"]),
        Route("/public/{rest:path}", public),
        Route("/admin/{rest:path}", user),
        Route("/health", public),
        Route("/health/", public),
    ])  # fmt: skip
    app.add_middleware(KeySentryMiddleware, sentry=ks, permissions=PERMISSIONS, **options)
    return app


def _wsgi_call(
    ks: KeySentry, environ: dict[str, Any], **options: Any
) -> tuple[str, bytes, dict[str, Any]]:
    seen: dict[str, Any] = {}

    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(env)
        start_response("200 OK", [])
        return [b"app reached"]

    statuses: list[str] = []
    middleware = KeySentryWSGIMiddleware(app, sentry=ks, permissions=PERMISSIONS, **options)
    base = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "127.0.0.1"}
    body = b"".join(middleware(base | environ, lambda s, h, *a: statuses.append(s)))
    return statuses[0], body, seen


@pytest.fixture
def reader(ks: KeySentry) -> str:
    ks.create_api_auth_app("internal-api", "Internal", "sk_live",
                           permissions=["users:read", "users:delete", "users:write"])  # fmt: skip
    return ks.create_api_key("internal-api", "reader", permissions=["users:read"]).secret


# ------------------------------------------------------------------ method case (hole 1)
@pytest.mark.parametrize("method", ["DELETE", "delete", "Delete", "dElEtE"])
def test_no_method_case_passes_a_method_scoped_permission(
    ks: KeySentry, reader: str, method: str
) -> None:
    headers = {"Authorization": f"Bearer {reader}"}
    with TestClient(_asgi_app(ks)) as client:
        assert client.request(method, "/users/7", headers=headers).status_code == 403
    status, body, seen = _wsgi_call(
        ks, {"REQUEST_METHOD": method, "PATH_INFO": "/users/7",
             "HTTP_AUTHORIZATION": f"Bearer {reader}"},
    )  # fmt: skip
    assert status.startswith("403"), status
    assert json.loads(body)["errors"][0]["reason"] == "permission_denied"
    assert seen == {}  # the app never saw it


def test_the_app_is_handed_the_method_that_was_checked(ks: KeySentry, reader: str) -> None:
    headers = {"Authorization": f"Bearer {reader}"}
    with TestClient(_asgi_app(ks)) as client:
        assert client.request("get", "/users/7", headers=headers).json() == {"method": "GET"}
    status, _, seen = _wsgi_call(
        ks, {"REQUEST_METHOD": "get", "PATH_INFO": "/users/7",
             "HTTP_AUTHORIZATION": f"Bearer {reader}"},
    )  # fmt: skip
    assert status.startswith("200")
    assert seen["REQUEST_METHOD"] == "GET"


@pytest.mark.parametrize("method", ["GE T", "GET\x00", "DEL@TE", "GÉT", "", "X" * 40])
def test_a_method_that_is_not_a_token_is_400(ks: KeySentry, reader: str, method: str) -> None:
    verdict = ks.verify(reader, method=method, path="/users/7")
    assert (verdict.status, verdict.reason) == (400, "invalid_method")
    status, body, seen = _wsgi_call(
        ks, {"REQUEST_METHOD": method, "PATH_INFO": "/users/7",
             "HTTP_AUTHORIZATION": f"Bearer {reader}"},
    )  # fmt: skip
    assert status.startswith("400")
    assert json.loads(body)["errors"][0]["reason"] == "invalid_method"
    assert seen == {}


def test_endpoint_rules_count_every_method_case(ks: KeySentry) -> None:
    ks.create_rate_limit_scheme(
        "posts", "Posts", [RateLimitRule.from_short("2/minute@POST /users/*")]
    )
    ks.create_api_auth_app("writer-api", "W", "sk_w", permissions=["users:*"],
                           rate_limit_scheme_slug="posts")  # fmt: skip
    secret = ks.create_api_key("writer-api", "w").secret
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(_asgi_app(ks)) as client:
        statuses = [client.request(m, "/users/1", headers=headers).status_code
                    for m in ["post", "Post", "POST", "pOsT", "post"]]  # fmt: skip
    assert statuses == [200, 200, 429, 429, 429]


# ------------------------------------------------------------ paths and exclude (7, 14)
@pytest.mark.parametrize("path", ["/public/../admin/x", "/public/./x", "/public//x", "/health/.."])
def test_dot_and_empty_segments_are_refused_before_exclude(ks: KeySentry, path: str) -> None:
    options = {"exclude": ["/public/*", "/health"]}
    with TestClient(_asgi_app(ks, **options)) as client:
        scope_path_reply = client.get("/")  # a client would normalise; build scopes by hand
        assert scope_path_reply.status_code == 401
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    import anyio

    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": [],
             "query_string": b""}  # fmt: skip
    anyio.run(_asgi_app(ks, **options), scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 400
    status, _, seen = _wsgi_call(ks, {"PATH_INFO": path}, **options)
    assert status.startswith("400")
    assert seen == {}


def test_an_excluded_path_covers_its_trailing_slash(ks: KeySentry) -> None:
    with TestClient(_asgi_app(ks, exclude=["/health"])) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health/").status_code == 200
        assert client.get("/healthz").status_code == 401  # not a prefix match
    assert _wsgi_call(ks, {"PATH_INFO": "/health/"}, exclude=["/health"])[0].startswith("200")


# ------------------------------------------------------------- api_key_header (hole 11)
def test_with_a_key_header_the_apps_own_bearer_token_is_left_alone(
    ks: KeySentry, reader: str
) -> None:
    own = {"X-API-Key": reader, "Authorization": "Bearer the-apps-session-token"}
    with TestClient(_asgi_app(ks, api_key_header="X-API-Key")) as client:
        assert client.get("/users/1", headers=own).status_code == 200
        bearer_only = client.get("/users/1", headers={"Authorization": f"Bearer {reader}"})
        assert bearer_only.json()["errors"][0]["reason"] == "missing_key"
    with TestClient(_asgi_app(ks, api_key_header="X-API-Key", read_authorization=True)) as c:
        assert c.get("/users/1", headers=own).status_code == 401  # both read: they disagree
        assert c.get("/users/1", headers={"Authorization": f"Bearer {reader}"}).status_code == 200
    status, _, _ = _wsgi_call(
        ks, {"PATH_INFO": "/users/1", "HTTP_X_API_KEY": reader,
             "HTTP_AUTHORIZATION": "Bearer the-apps-session-token"},
        api_key_header="X-API-Key",
    )  # fmt: skip
    assert status.startswith("200")


# ----------------------------------------------------------- role permissions (hole 6)
@pytest.mark.parametrize("field", ["org_role_permissions", "workspace_role_permissions"])
def test_role_permissions_are_capped_by_the_app(ks: KeySentry, field: str) -> None:
    ks.create_api_auth_app("narrow", "Narrow", "sk_n", permissions=["users:read"])
    with pytest.raises(ValidationError) as refused:
        ks.create_api_key("narrow", "k", **{field: ["*"]})
    assert [e.field for e in refused.value.errors] == [field]
    assert ks.list_api_keys("narrow") == []  # nothing written
    issued = ks.create_api_key("narrow", "k", **{field: ["users:read"]})
    assert ks.verify(issued.secret, permissions=["users:read"]).allowed
    with pytest.raises(ValidationError, match="would no longer grant"):
        ks.update_api_auth_app("narrow", permissions=["orders:read"])


def test_role_permissions_stored_past_the_cap_are_intersected_at_verification(
    ks: KeySentry,
) -> None:
    # a record written before the rule (or behind the service's back) grants no more
    ks.create_api_auth_app("narrow", "Narrow", "sk_n", permissions=["users:read"])
    issued = ks.create_api_key("narrow", "k")
    with ks.store.write() as session:
        record = session.get_key(issued.key.id)
        assert record is not None
        session.save_key(record.model_copy(update={"org_role_permissions": ["*"]}))
    ks.cache.clear()
    assert ks.verify(issued.secret, permissions=["users:read"]).allowed
    denied = ks.verify(issued.secret, permissions=["billing:delete"])
    assert denied.reason == "permission_denied"
    assert denied.identity is not None
    assert denied.identity.permissions == ("users:read",)


# -------------------------------------------------- a secret where an id goes (hole 8)
def test_a_secret_in_an_id_position_is_refused_and_never_echoed(
    ks: KeySentry, reader: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for call in (ks.get_api_key, ks.revoke_api_key, ks.rotate_api_key):
        with pytest.raises(ValidationError) as refused:
            call(reader)
        assert reader not in str(refused.value)
        assert "looks like an API key" in str(refused.value)
    with pytest.raises(ValidationError) as refused:
        ks.get_api_key(f"  Bearer {reader}\n")
    assert reader not in str(refused.value)
    assert reader not in caplog.text
    assert ks.verify(reader).allowed  # nothing was revoked


def test_the_cli_does_not_echo_a_secret_given_as_a_key_id(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    with KeySentry(url) as ks:
        ks.create_api_auth_app("cli-app", "CLI", "sk_live")
        secret = ks.create_api_key("cli-app", "k").secret
    for command in (["keys", "revoke", secret], ["keys", "rotate", secret],
                    ["keys", "get", secret]):  # fmt: skip
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["--database-url", url, *command])
        assert code in (1, 2), command
        assert secret not in out.getvalue() + err.getvalue(), command


def test_sql_parameters_stay_out_of_the_logs(
    sql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with KeySentry(sql_url) as ks:
        ks.create_api_auth_app("logged", "L", "sk_l")
        secret = ks.create_api_key("logged", "k").secret
        engine = ks.store._engine  # type: ignore[attr-defined]
        engine.echo = True
        caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
        ks.cache.clear()
        assert ks.verify(secret).allowed
        engine.echo = False
    from keysentry.core.keys import hash_key

    assert "SELECT" in caplog.text  # the statements are logged ...
    assert hash_key(secret) not in caplog.text  # ... their parameters are not
    assert "[SQL parameters hidden" in caplog.text


# --------------------------------------------------- NUL, NaN, deep values (holes 4, 5)
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("nul in name", {"name": "a\x00b"}, "name"),
    ("nul in permissions", {"permissions": ["users:\x00"]}, "permissions"),
    ("nul in metadata key", {"metadata": {"a\x00": 1}}, "metadata"),
    ("nul in metadata value", {"metadata": {"a": ["x\x00"]}}, "metadata"),
    ("nan in metadata", {"metadata": {"a": math.nan}}, "metadata"),
    ("infinity in metadata", {"metadata": {"a": {"b": -math.inf}}}, "metadata"),
    ("deep metadata", {"metadata": {"a": json.loads("[" * 500 + "]" * 500)}}, "metadata"),
    ("nul in owner", {"owner": "\x00"}, "owner"),
]


@pytest.mark.parametrize(("case", "fields", "field"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_unstorable_values_are_a_field_error_on_every_store(
    ks: KeySentry, case: str, fields: dict[str, Any], field: str
) -> None:
    ks.create_api_auth_app("vals", "Vals", "sk_v", permissions=["users:*"])
    fields = dict(fields)  # the parameter is shared by the three stores
    name = fields.pop("name", "k")
    with pytest.raises(ValidationError) as refused:
        ks.create_api_key("vals", name, **fields)
    assert [e.field for e in refused.value.errors] == [field]
    assert ks.list_api_keys("vals") == []


@pytest.mark.parametrize("value", ["a\x00", "key_\x00x", "\x07", "x" * 201])
def test_unstorable_ids_are_a_field_error_not_an_outage(ks: KeySentry, value: str) -> None:
    for call, field in ((ks.get_api_key, "key_id"), (ks.revoke_api_key, "key_id"),
                        (ks.get_api_auth_app, "app_slug"), (ks.list_api_keys, "app_slug"),
                        (ks.get_rate_limit_scheme, "slug")):  # fmt: skip
        with pytest.raises(ValidationError) as refused:
            call(value)
        assert [e.field for e in refused.value.errors] == [field]


# ----------------------------------------------------------------- admin API (hole 4, 5)
class Admin:
    def __init__(self, ks: KeySentry) -> None:
        self.ks = ks
        self.secret = create_admin_key(ks).secret
        self.client = TestClient(create_admin_app(ks), raise_server_exceptions=False)

    def send(self, method: str, path: str, content: bytes | None = None,
             headers: dict[str, str] | None = None) -> Any:  # fmt: skip
        head = {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}
        return self.client.request(method, path, content=content, headers=head | (headers or {}))


@pytest.fixture
def admin(ks: KeySentry) -> Iterator[Admin]:
    ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["users:*"])
    admin = Admin(ks)
    with admin.client:  # one event loop thread for the test, not one per request
        yield admin


def _field(response: Any) -> str | None:
    return response.json()["errors"][0].get("field")  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=["memory", POSTGRES_PARAM])
def parsed_admin(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Admin]:
    """One admin API per store for the probes its parsing refuses before any write, on the
    in-memory store and on PostgreSQL, the strictest (it cannot store NUL), rather than on
    all four; shared by those probes (each checks that it wrote nothing), set up once."""
    with contextlib.ExitStack() as stack:
        url = "memory://"
        if request.param != "memory":
            directory = tmp_path_factory.mktemp("parsed")
            url = stack.enter_context(sql_database(request.param, request, directory))
        ks = stack.enter_context(KeySentry(url, clock=FakeClock()))
        ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["users:*"])
        admin = Admin(ks)
        with admin.client:
            yield admin


def _refused_unwritten(admin: Admin, method: str, path: str, body: bytes, field: str) -> None:
    before = admin.ks.list_events()
    reply = admin.send(method, path, body)
    assert reply.status_code == 422, reply.text
    assert _field(reply) == field
    assert admin.ks.list_events() == before  # refused before any write


JSON_ROUTES = [
    ("POST", "/api-auth/apps", "name"),
    ("PATCH", "/api-auth/apps/shop", "name"),
    ("POST", "/api-auth/apps/shop/keys", "metadata"),
    ("POST", "/api-auth/keys/revoke", "reason"),
    ("POST", "/api-auth/keys/rotate", "api_key_id"),
    ("POST", "/api-auth/rate-limit-schemes", "rules"),
    ("POST", "/v1/authz/check", "principal"),
]


@pytest.mark.parametrize(("method", "path", "field"), JSON_ROUTES)
@pytest.mark.parametrize("depth", [40, 1000, 100_000])
def test_deep_json_is_a_4xx_naming_the_field(
    parsed_admin: Admin, method: str, path: str, field: str, depth: int
) -> None:
    body = b'{"' + field.encode() + b'": ' + b"[" * depth + b"]" * depth + b"}"
    _refused_unwritten(parsed_admin, method, path, body, field)


@pytest.mark.parametrize(("method", "path", "field"), JSON_ROUTES)
@pytest.mark.parametrize("raw", [b'"a\\u0000b"', b"NaN", b"Infinity", b"1e999", b'["\\u0000"]'])
def test_nul_and_non_finite_values_in_a_body_are_422(
    parsed_admin: Admin, method: str, path: str, field: str, raw: bytes
) -> None:
    body = b'{"' + field.encode() + b'": ' + raw + b"}"
    _refused_unwritten(parsed_admin, method, path, body, field)


def test_nul_in_metadata_deep_down_is_422_on_every_store(admin: Admin) -> None:
    body = json.dumps({"name": "k", "metadata": {"a": {"b": ["ok", "no\u0000"]}}}).encode()
    reply = admin.send("POST", "/api-auth/apps/shop/keys", body)
    assert (reply.status_code, _field(reply)) == (422, "metadata")
    assert admin.ks.list_api_keys("shop") == []


@pytest.mark.parametrize("path_id", ["%00", "key_%00", "a%07b"])
def test_nul_in_a_path_id_is_422(admin: Admin, path_id: str) -> None:
    for path, field in ((f"/api-auth/keys/{path_id}", "key_id"),
                        (f"/api-auth/apps/{path_id}", "app_slug"),
                        (f"/api-auth/rate-limit-schemes/{path_id}", "slug")):  # fmt: skip
        reply = admin.send("GET", path)
        assert (reply.status_code, _field(reply)) == (422, field), path


def test_a_secret_as_a_key_id_is_not_echoed_by_the_admin_api(admin: Admin) -> None:
    secret = admin.ks.create_api_key("shop", "k").secret
    for reply in (
        admin.send("GET", f"/api-auth/keys/{secret}"),
        admin.send("POST", "/api-auth/keys/revoke", json.dumps({"api_key_id": secret}).encode()),
        admin.send("POST", "/api-auth/keys/rotate", json.dumps({"api_key_id": secret}).encode()),
    ):
        assert reply.status_code == 422
        assert secret not in reply.text
        assert "looks like an API key" in reply.text
    assert admin.ks.verify(secret).allowed


@pytest.mark.parametrize(
    "query", ["limit=²", "offset=¹", "limit=٣", "limit=" + "9" * 4301, "limit=-1", "limit=1.0",
              "offset=" + "1" * 20],
)  # fmt: skip
def test_query_integers_are_ascii_digits_in_range(parsed_admin: Admin, query: str) -> None:
    admin = parsed_admin
    reply = admin.send("GET", f"/api-auth/apps?{query}")
    assert reply.status_code == 400
    assert _field(reply) == query.split("=")[0]
    events = admin.send("GET", f"/api-auth/events?{query.replace('offset', 'after_seq')}")
    assert events.status_code == 400


@pytest.mark.parametrize(
    ("value", "status"),
    [("²", 400), ("٣", 400), ("-1", 400), ("1e3", 400), (" 12", 400), ("9" * 4301, 413),
     (str(2**21), 413)],
)  # fmt: skip
def test_odd_content_lengths_are_4xx(parsed_admin: Admin, value: str, status: int) -> None:
    # in process, so the header reaches the app as sent (a server would refuse most itself)
    admin = parsed_admin
    before = admin.ks.list_events()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"name": "x"}'}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    import anyio

    scope = {
        "type": "http", "method": "POST", "path": "/api-auth/apps", "root_path": "",
        "query_string": b"", "http_version": "1.1", "scheme": "http",
        "server": ("testserver", 80), "client": ("127.0.0.1", 1),
        "headers": [(b"authorization", f"Bearer {admin.secret}".encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", value.encode("utf-8"))],
    }  # fmt: skip
    anyio.run(create_admin_app(admin.ks), scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == status
    assert admin.ks.list_events() == before  # refused before any write


def test_check_refuses_a_method_that_is_not_a_token(admin: Admin) -> None:
    body = {"principal": {"type": "api_key", "value": "sk_x"}, "resource": "/users/1",
            "method": "GE T"}  # fmt: skip
    reply = admin.send("POST", "/v1/authz/check", json.dumps(body).encode())
    assert (reply.status_code, _field(reply)) == (422, "method")
    body["method"] = "delete"
    key = admin.ks.create_api_key("shop", "k", permissions=["users:read"]).secret
    body["principal"]["value"] = key  # type: ignore[index]
    body["required_permissions"] = ["users:read"]  # type: ignore[assignment]
    verdict = admin.send("POST", "/v1/authz/check", json.dumps(body).encode()).json()
    assert verdict["allowed"] is True


def test_forward_auth_upper_cases_the_forwarded_method(admin: Admin) -> None:
    ks = admin.ks
    ks.create_rate_limit_scheme("posts", "P", [RateLimitRule.from_short("1/minute@POST /users/*")])
    ks.update_api_auth_app("shop", rate_limit_scheme_slug="posts")
    key = ks.create_api_key("shop", "k").secret
    statuses = [
        admin.client.get("/v1/authz/forward", headers={
            "Authorization": f"Bearer {key}", "X-Forwarded-Method": method,
            "X-Forwarded-Uri": "/users/1"}).status_code
        for method in ["post", "Post", "POST"]
    ]  # fmt: skip
    assert statuses == [200, 429, 429]
    bad = admin.client.get("/v1/authz/forward", headers={
        "Authorization": f"Bearer {key}", "X-Forwarded-Method": "P@ST",
        "X-Forwarded-Uri": "/users/1"})  # fmt: skip
    assert bad.status_code == 400


# ------------------------------------------------------------- Retry-After (finding 13)
def test_retry_after_is_the_refusing_rules_t(ks: KeySentry) -> None:
    from keysentry.testing import FakeClock

    clock = FakeClock(start=1_700_000_040.0)  # 40 s into a minute window
    with KeySentry("memory://", clock=clock) as timed:
        timed.create_rate_limit_scheme("tight", "T", [RateLimitRule.from_short("3/minute")])
        timed.create_api_auth_app("rl", "RL", "sk_rl", rate_limit_scheme_slug="tight")
        key = timed.create_api_key("rl", "k").secret
        for _ in range(3):
            assert timed.verify(key).allowed
        clock.advance(20)  # the next window: the old count still weighs on the sliding window
        refused = timed.verify(key)
        assert refused.status == 429
        headers = dict(refused.headers)
        t = int(headers["ratelimit"].rsplit("t=", 1)[1])
        assert int(headers["retry-after"]) == t == int(headers["x-ratelimit-reset"])
        clock.advance(t - 1)
        assert timed.verify(key).status == 429  # a client trusting t a second early ...
        clock.advance(1)
        assert timed.verify(key).allowed  # ... and on time


# ------------------------------------------------------------- CLI (finding 10)
def test_cli_verify_prints_a_rate_limited_keys_verdict(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    with KeySentry(url) as ks:
        ks.create_rate_limit_scheme("std", "S", [RateLimitRule.from_short("100/minute")])
        ks.create_api_auth_app("cli-app", "C", "sk_live", permissions=["users:read"],
                               resources=["users/*"], rate_limit_scheme_slug="std")  # fmt: skip
        secret = ks.create_api_key("cli-app", "k", permissions=["users:read"]).secret
    for extra in ([], ["--json"]):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["--database-url", url, "verify", secret, "--path", "/users/42",
                         "--permission", "users:read", *extra])  # fmt: skip
        assert code == 0, err.getvalue()
        assert "Traceback" not in err.getvalue()
        assert "99/100" in out.getvalue() or '"remaining": 99' in out.getvalue()
