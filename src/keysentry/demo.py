"""``keysentry demo``: a protected example API, served for real, and a tour of it.

Everything lives in a temporary directory (a SQLite file; the in-process rate limiter) and is
removed at exit. The example API has ``GET /users/{id}`` (needs ``users:read``),
``POST /users`` (needs ``users:write``) and ``/health`` (open), behind
:class:`~keysentry.asgi.KeySentryMiddleware`, next to the admin API and the verification
endpoints. ``--check`` plays the tour over real HTTP and exits 0 only if every step behaved.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from keysentry.admin import create_admin_app, create_admin_key
from keysentry.asgi import KeySentryMiddleware
from keysentry.models import RateLimitRule
from keysentry.server import free_port, pages_available, running
from keysentry.service import KeySentry

__all__ = ["DemoSetup", "build_demo", "run_demo"]

APP_SLUG = "demo-api"
LIMIT = 5  # requests per minute per key: low enough to reach in the tour


@dataclass(frozen=True)
class DemoSetup:
    """What the demo set up: its service and the secrets it issued."""

    ks: KeySentry
    reader_secret: str
    admin_secret: str
    portal_url: str | None = None


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _get_user(request: Request) -> JSONResponse:
    key = request.state.api_key  # the Identity the middleware attached
    served_for = {"key_id": key.key_id, "key_name": key.key_name, "app_slug": key.app_slug,
                  "permissions": list(key.permissions)}  # fmt: skip
    return JSONResponse({"user_id": request.path_params["user_id"], "served_for": served_for})


async def _create_user(request: Request) -> JSONResponse:
    return JSONResponse({"created": True}, status_code=201)


def build_demo(database_url: str) -> tuple[Starlette, DemoSetup]:
    """Create the demo's scheme, app and keys in *database_url* and build its ASGI app."""
    ks = KeySentry(database_url)
    ks.create_rate_limit_scheme("demo", "Demo", [RateLimitRule(unit="minute", max_requests=LIMIT)])
    ks.create_api_auth_app(
        APP_SLUG, "Demo API", "sk_demo", permissions=["users:read", "users:write"],
        rate_limit_scheme_slug="demo",
    )  # fmt: skip
    reader = ks.create_api_key(APP_SLUG, "reader", permissions=["users:read"])
    admin = create_admin_key(ks, "demo admin")
    routes: list[BaseRoute] = [
        Route("/health", _health),
        Route("/users/{user_id}", _get_user, methods=["GET"]),
        Route("/users", _create_user, methods=["POST"]),
        *create_admin_app(ks).routes,
    ]
    portal_url = None
    if pages_available():  # the web extra: the dashboard and a customer's portal link
        from keysentry.dashboard import create_dashboard_app
        from keysentry.portal import create_portal_app

        routes += [Mount("/dashboard", create_dashboard_app(ks)),
                   Mount("/portal", create_portal_app(ks, title="Demo API keys"))]  # fmt: skip
        ks.create_api_key(APP_SLUG, "customer's first key", permissions=["users:read"],
                          owner_user_id="customer-1")  # fmt: skip
        portal_url = ks.create_portal_session(APP_SLUG, "customer-1", ttl_seconds=3600,
                                              permissions=["users:read"]).url  # fmt: skip
    guard = Middleware(
        KeySentryMiddleware,
        sentry=ks,
        # those check keys (or sessions) themselves
        exclude=[
            "/health",
            "/api-auth/*",
            "/v1/authz/*",
            "/dashboard",
            "/dashboard/*",
            "/portal/*",
        ],
        permissions={"GET /users/*": ["users:read"], "POST /users": ["users:write"]},
    )
    app = Starlette(routes=routes, middleware=[guard])
    return app, DemoSetup(ks, reader.secret, admin.secret, portal_url)


# ---------------------------------------------------------------------- HTTP
@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: Any


def _request(
    base: str, method: str, path: str, key: str | None = None, body: Any = None,
    opener: urllib.request.OpenerDirector | None = None, form: dict[str, str] | None = None,
) -> _Answer:  # fmt: skip
    request = urllib.request.Request(base + path, method=method)  # noqa: S310 (http only)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    elif form is not None:  # a page's form, as a browser sends it
        data = urllib.parse.urlencode(form).encode()
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with (opener or _OPENER).open(request, data, timeout=10) as response:
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, error.headers, error.read()
    lowered = {name.lower(): value for name, value in headers.items()}
    if lowered.get("content-type", "").startswith("application/json"):
        return _Answer(status, lowered, json.loads(raw) if raw else None)
    return _Answer(status, lowered, raw.decode("utf-8", "replace"))


_OPENER = urllib.request.build_opener()
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class _Tour:
    base: str
    out: TextIO
    failures: list[str] = field(default_factory=list)
    # the pages' session cookies
    opener: urllib.request.OpenerDirector = field(
        default_factory=lambda: urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    )

    def step(self, title: str, answer: _Answer, expected: int, check: Callable[[_Answer], bool]
             = lambda a: True, show: str = "") -> _Answer:  # fmt: skip
        try:
            good = answer.status == expected and check(answer)
        except (KeyError, TypeError, ValueError, AttributeError):
            good = False
        mark = "ok  " if good else "FAIL"
        note = f"  {show}" if show else ""
        print(f"  {mark} {title}: {answer.status} (expected {expected}){note}", file=self.out)
        if not good:
            self.failures.append(title)
            print(f"       got: {json.dumps(answer.body)[:300]}", file=self.out)
        return answer

    def call(self, method: str, path: str, key: str | None = None, body: Any = None) -> _Answer:
        return _request(self.base, method, path, key, body, self.opener)

    def submit(self, path: str, page: _Answer) -> _Answer:
        """Send the form of *page* (its CSRF token) to *path*, with this tour's cookies."""
        found = _CSRF.search(page.body if isinstance(page.body, str) else "")
        form = {"csrf": found.group(1) if found else ""}
        return _request(self.base, "POST", path, opener=self.opener, form=form)


def _reason(answer: _Answer) -> str | None:
    try:
        return str(answer.body["errors"][0]["reason"])
    except (KeyError, IndexError, TypeError):
        return None


def tour(base: str, setup: DemoSetup, out: TextIO) -> list[str]:
    """Play every step against the demo served at *base*; return the steps that failed."""
    t = _Tour(base, out)
    reader, admin = setup.reader_secret, setup.admin_secret
    print(f"keysentry demo --check: touring {base}", file=out)
    _tour_verification(t, reader)
    _tour_revocation(t, admin)
    _tour_rotation(t, admin)
    if setup.portal_url is not None:
        _tour_web(t, setup.portal_url)
    print(f"{'all steps behaved' if not t.failures else f'{len(t.failures)} step(s) failed'}",
          file=out)  # fmt: skip
    return t.failures


def _tour_verification(t: _Tour, reader: str) -> None:
    """A key allowed, missing, short of a permission, over its limit."""
    a = t.call("GET", "/users/42", reader)
    served = a.body.get("served_for", {}) if isinstance(a.body, dict) else {}
    t.step(
        "GET /users/42 with a users:read key",
        a,
        200,
        lambda a: served.get("app_slug") == APP_SLUG,
        show=f"key {served.get('key_id')}",
    )
    t.step("GET /users/42 without a key", t.call("GET", "/users/42"), 401,
           lambda a: a.headers.get("www-authenticate", "").startswith("Bearer"))  # fmt: skip
    t.step("POST /users with the users:read key", t.call("POST", "/users", reader, {}), 403,
           lambda a: _reason(a) == "permission_denied", show="(needs users:write)")  # fmt: skip
    # One request counted so far (refusals before the rate-limit step are not counted).
    statuses = [t.call("GET", "/users/7", reader) for _ in range(LIMIT - 1)]
    a = t.call("GET", "/users/7", reader)
    t.step(f"request {LIMIT + 1} within a minute ({LIMIT}/minute)", a, 429,
           lambda a: all(s.status == 200 for s in statuses)
           and int(a.headers.get("retry-after", "0")) > 0,
           show=f"Retry-After: {a.headers.get('retry-after')}")  # fmt: skip


def _tour_revocation(t: _Tour, admin: str) -> None:
    """A key issued through the admin API, then revoked: refused at once."""
    created = t.step("admin API: issue a key (POST /api-auth/apps/demo-api/keys)",
                     t.call("POST", f"/api-auth/apps/{APP_SLUG}/keys", admin,
                            {"name": "to revoke", "permissions": ["users:read"]}), 201,
                     lambda a: str(a.body.get("secret", "")).startswith("sk_demo_"))  # fmt: skip
    if created.status == 201:
        secret, key_id = created.body["secret"], created.body["key"]["id"]
        t.step("GET /users/1 with the new key", t.call("GET", "/users/1", secret), 200)
        t.step("admin API: revoke it (POST /api-auth/keys/revoke)",
               t.call("POST", "/api-auth/keys/revoke", admin, {"api_key_id": key_id}), 200,
               lambda a: a.body.get("revoked_at") is not None)  # fmt: skip
        t.step("GET /users/1 with the revoked key, right after", t.call("GET", "/users/1", secret),
               403, lambda a: _reason(a) == "key_revoked")  # fmt: skip


def _tour_rotation(t: _Tour, admin: str) -> None:
    """A key rotated: the old secret refused, the new one allowed."""
    created = t.call("POST", f"/api-auth/apps/{APP_SLUG}/keys", admin, {"name": "to rotate"})
    if t.step("admin API: issue another key", created, 201).status == 201:
        old, key_id = created.body["secret"], created.body["key"]["id"]
        rotated = t.step("admin API: rotate it (POST /api-auth/keys/rotate)",
                         t.call("POST", "/api-auth/keys/rotate", admin, {"api_key_id": key_id}),
                         200, lambda a: a.body.get("secret") not in (None, old))  # fmt: skip
        t.step("GET /users/1 with the old secret", t.call("GET", "/users/1", old), 401)
        if rotated.status == 200:
            new = rotated.body["secret"]
            t.step("GET /users/1 with the new secret", t.call("GET", "/users/1", new), 200)
            t.step("POST /v1/authz/check for the new secret",
                   t.call("POST", "/v1/authz/check", admin, {
                       "principal": {"type": "api_key", "value": new}, "method": "GET",
                       "resource": "/users/1", "required_permissions": ["users:read"]}),
                   200, lambda a: a.body["allowed"] is True,
                   show="allowed: true")  # fmt: skip


def _tour_web(t: _Tour, portal_url: str) -> None:
    """The dashboard's sign-in page and a customer's single-use portal link."""
    t.step("the dashboard's sign-in page (GET /dashboard/login)",
           t.call("GET", "/dashboard/login"), 200)  # fmt: skip
    page = t.call("GET", portal_url)
    t.step("a customer's portal link, fetched (GET /portal/t/…)", page, 200,
           lambda a: "data-autosubmit" in a.body,
           show="its Continue form: a GET spends nothing")  # fmt: skip
    t.step("its Continue form, sent (POST /portal/t/…)", t.submit(portal_url, page), 200,
           lambda a: "customer&#39;s first key" in a.body,
           show="signed in: their keys listed")  # fmt: skip
    again = t.submit(portal_url, t.call("GET", portal_url))
    t.step("the same link, sent again", again, 403, show="(good once)")


def _instructions(base: str, setup: DemoSetup, directory: str, out: TextIO) -> None:
    reader, admin = setup.reader_secret, setup.admin_secret
    print(
        f"""keysentry demo: the example API is served on {base} (Ctrl-C stops it)
  store:       {directory}/demo.db (removed at exit); rate limits: in this process
  reader key:  {reader}   (users:read, {LIMIT} requests/minute)
  admin key:   {admin}   (keysentry:admin)

Try it:
  curl -i {base}/users/42 -H 'Authorization: Bearer {reader}'     # 200 and who you are
  curl -i {base}/users/42                                          # 401: no key
  curl -i -X POST {base}/users -H 'Authorization: Bearer {reader}'  # 403: no users:write
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}} ' {base}/users/1 \\
      -H 'Authorization: Bearer {reader}'; done; echo                # ... 429 at the limit
  curl -s {base}/api-auth/apps/{APP_SLUG}/keys -H 'Authorization: Bearer {admin}'   # admin API
  curl -s -X POST {base}/api-auth/keys/revoke -H 'Authorization: Bearer {admin}' \\
      -H 'Content-Type: application/json' -d '{{"api_key_id": "<id from the list>"}}'
  curl -s {base}/api-auth/openapi.json                                 # the OpenAPI document
Or run `keysentry demo --check` for the whole tour, checked.""",
        file=out,
    )
    if setup.portal_url is not None:
        print(f"""
In a browser:
  dashboard:   {base}/dashboard/   (sign in with the admin key above)
  portal:      {base}{setup.portal_url}
               (a customer's sign-in link: good once, for an hour)""", file=out)  # fmt: skip


def run_demo(
    *, host: str = "127.0.0.1", port: int | None = None, check: bool = False,
    out: TextIO = sys.stdout,
) -> int:  # fmt: skip
    """Serve the demo; with *check*, play the tour and return 0 only if every step behaved,
    else serve until Ctrl-C (or SIGTERM) and return 0."""
    with tempfile.TemporaryDirectory(prefix="keysentry-demo-") as directory:
        app, setup = build_demo(f"sqlite:///{Path(directory) / 'demo.db'}")
        try:
            chosen = port if port is not None else (free_port(host) if check else 8000)
            base = f"http://{host}:{chosen}"
            with running(app, host, chosen):
                if check:
                    return 1 if tour(base, setup, out) else 0
                _instructions(base, setup, directory, out)
                _wait_for_signal()
                return 0
        finally:
            setup.ks.close()


def _wait_for_signal() -> None:
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
