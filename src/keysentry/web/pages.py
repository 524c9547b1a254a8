"""The pages' toolkit, written once for the dashboard and the portal.

- **Templates**: Jinja2 with autoescaping on (``.html``), undefined names an error.
- **Sessions**: a signed cookie (itsdangerous, timestamped), HttpOnly, SameSite=Lax, Secure
  when the request came over HTTPS, scoped to the mount path. It holds ids, never a secret.
  The key is the store's shared secret (or one given), so every worker and machine on that
  store reads every other's cookies; the salt differs per page set, so a portal cookie is
  no dashboard cookie.
- **CSRF**: a random token per session, in every form, compared in constant time; signing
  in starts a session with a new one.
- **Forms**: ``application/x-www-form-urlencoded`` bodies only, at most 64 KiB, read with the
  standard library (Starlette's ``request.form()`` needs python-multipart, for uploads
  these pages never take).
- **Headers**: a Content-Security-Policy allowing only this origin's scripts and styles,
  no framing, no referrer (a portal link's token stays out of other sites' logs), no caching.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from keysentry.errors import ConfigurationError, KeySentryError, NotFoundError, StoreError

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = [
    "MAX_FORM_BYTES",
    "SECRET_KEY_ENV",
    "SECURITY_HEADERS",
    "Form",
    "FormError",
    "Pages",
    "View",
    "check_colour",
    "check_site",
    "cookie_secret",
    "svg",
]

#: A page's logic: the request and its form (``None`` for a GET), run in a worker thread
#: (management calls block on the store).
View = Callable[[Request, "Form | None"], Response]

logger = logging.getLogger("keysentry")
#: The environment variable that may hold the cookies' signing key.
SECRET_KEY_ENV = "KEYSENTRY_SECRET_KEY"  # noqa: S105  (a variable's name, not a secret)
R = TypeVar("R", bound=Response)
HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_STATIC = {
    "keysentry.css": "text/css; charset=utf-8",
    "keysentry.js": "text/javascript; charset=utf-8",
}
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def cookie_secret(ks: KeySentry, given: str | None) -> str:
    """The key that signs session cookies: *given*, else ``$KEYSENTRY_SECRET_KEY``, else the
    store's shared secret (so every worker and machine on the store agrees)."""
    if given is not None:
        if not isinstance(given, str) or len(given) < 16:
            raise ConfigurationError("secret_key must be a string of 16 characters or more")
        return given
    return os.environ.get(SECRET_KEY_ENV) or ks.store.shared_secret("web")


def check_colour(value: str, name: str = "accent") -> str:
    """A ``#rrggbb`` colour, or :class:`ValueError` naming *name*."""
    if not isinstance(value, str) or not _COLOUR.fullmatch(value):
        raise ValueError(f"{name} must be a colour like #2563eb")
    return value.lower()


def check_site(title: object, session_seconds: object, longest: int) -> None:
    """Refuse a site's *title* that is not a string, or *session_seconds* that is not an
    integer from 60 to *longest*.

    Raises:
        ConfigurationError: naming the option.
    """
    if not isinstance(title, str):
        raise ConfigurationError("title must be a string")
    if (
        isinstance(session_seconds, bool)
        or not isinstance(session_seconds, int)
        or not (60 <= session_seconds <= longest)
    ):
        raise ConfigurationError(f"session_seconds must be an integer from 60 to {longest}")


class FormError(Exception):
    """The request's body is not a form these pages accept (answered 400)."""


@dataclass
class Form:
    """A parsed form body: the first value of each field, stripped."""

    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        """The field's first value, stripped (*default* when absent)."""
        return self.values.get(name, default)

    def all(self, name: str) -> list[str]:
        """Every non-empty value of a repeated field (checkboxes)."""
        return [v for v in self.lists.get(name, []) if v]


class Pages:
    """Templates, sessions and responses for one set of pages mounted at one path.

    Args:
        name: the page set (``"dashboard"``, ``"portal"``): the cookie's name and salt.
        secret: signs the session cookie.
        max_age: seconds a session lasts after it was last written.
        globals: names every template sees (title, colours, mount path helpers).
    """

    def __init__(
        self, name: str, secret: str, *, max_age: int, globals: Mapping[str, Any] | None = None
    ) -> None:
        self.name = name
        self.cookie = f"keysentry_{name}"
        self.max_age = max_age
        self._signer = URLSafeTimedSerializer(secret, salt=f"keysentry.{name}")
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(globals or {})

    # ------------------------------------------------------------ sessions
    def session(self, request: Request) -> dict[str, Any]:
        """The request's session (a new one, with a CSRF token, if it has none valid)."""
        cached = request.scope.get("keysentry.session")
        if isinstance(cached, dict):
            return cached
        data: dict[str, Any] = {}
        raw = request.cookies.get(self.cookie)
        if raw and len(raw) < 4096:
            try:
                loaded = self._signer.loads(raw, max_age=self.max_age)
            except BadSignature:  # includes expiry; a forged or stale cookie starts afresh
                loaded = None
            if isinstance(loaded, dict):
                data = loaded
        if not isinstance(data.get("csrf"), str):
            data = {"csrf": secrets.token_urlsafe(24)}
            request.scope["keysentry.session_new"] = True  # render() sends it
        request.scope["keysentry.session"] = data
        return data

    def save(self, request: Request, response: Response, data: dict[str, Any]) -> None:
        """Write *data* as the session cookie on *response*."""
        request.scope["keysentry.session"] = data
        response.set_cookie(
            self.cookie,
            self._signer.dumps(data),
            max_age=self.max_age,
            path=self.root(request),
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="lax",
        )

    def sign_in(self, request: Request, response: Response, data: dict[str, Any]) -> None:
        """Start a signed-in session holding *data*, with a new CSRF token: one known before
        sign-in (from a cookie someone planted, say) is no good after it."""
        self.save(request, response, {**data, "csrf": secrets.token_urlsafe(24)})

    def clear(self, request: Request, response: Response) -> None:
        """End the session: a cookie of a fresh, signed-out one."""
        self.save(request, response, {"csrf": secrets.token_urlsafe(24)})

    # ------------------------------------------------------------ forms
    async def form(self, request: Request) -> Form:
        """The request's form, its CSRF token checked.

        Raises:
            FormError: not a urlencoded form, too large, malformed, or a wrong token.
        """
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise FormError("this page takes HTML forms (application/x-www-form-urlencoded)")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise FormError("the form is too large")
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                              max_num_fields=200)  # fmt: skip
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormError("the form could not be read") from exc
        form = Form()
        for name, value in pairs:
            if "\x00" in value or "\x00" in name:
                raise FormError("the form holds a NUL character")
            form.lists.setdefault(name, []).append(value.strip())
            form.values.setdefault(name, value.strip())
        expected = self.session(request)["csrf"]
        given = form.get("csrf")
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise FormError("the form's security token is missing or stale: reload the page")
        return form

    # ------------------------------------------------------------ responses
    @staticmethod
    def root(request: Request) -> str:
        """The mount path, with a trailing slash (``/dashboard/``)."""
        return str(request.scope.get("root_path", "")).rstrip("/") + "/"

    def url(self, request: Request, path: str = "") -> str:
        """A path under the mount (``url(request, "keys/key_1")``)."""
        return self.root(request) + path.lstrip("/")

    def render(
        self, request: Request, template: str, context: Mapping[str, Any], status: int = 200
    ) -> HTMLResponse:
        """The page, with the session's CSRF token and the security headers."""
        session = self.session(request)
        values = {"notices": [], "error": None, "errors": {}, **context}
        page = self.env.get_template(template).render(
            request=request, csrf=session["csrf"], root=self.root(request), **values
        )
        response = self.secure(HTMLResponse(page, status_code=status))
        if request.scope.pop("keysentry.session_new", False):
            self.save(request, response, session)
        return response

    def redirect(self, request: Request, path: str = "") -> RedirectResponse:
        """303 to a page under the mount (after a form)."""
        return self.secure(RedirectResponse(self.url(request, path), status_code=303))

    def page(self, view: View, *, form: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint for *view*: the form read (and its CSRF token checked) when *form*,
        then the view in a thread; a bad form is answered 400, a missing record 404, a
        store outage 503, and anything unexpected 503 and logged, never a 500."""

        async def endpoint(request: Request) -> Response:
            try:
                body = await self.form(request) if form else None
                return await run_in_threadpool(view, request, body)
            except FormError as exc:
                return self.problem(request, 400, str(exc))
            except NotFoundError as exc:
                return self.problem(request, 404, str(exc))
            except StoreError:
                logger.exception("keysentry: %s page failed on the store", self.name)
                return self.problem(request, 503, "The key store is unavailable; try again.")
            except KeySentryError as exc:
                return self.problem(request, 400, str(exc))
            except Exception:
                logger.exception("keysentry: %s page failed unexpectedly", self.name)
                return self.problem(request, 503, "Something went wrong; try again.")

        return endpoint

    def problem(self, request: Request, status: int, message: str) -> Response:
        """An error page."""
        return self.render(request, "error.html", {"status": status, "message": message},
                           status)  # fmt: skip

    @staticmethod
    def secure(response: R) -> R:
        """Add the security headers to *response*."""
        response.headers.update(SECURITY_HEADERS)
        return response

    def static_route(self, extra: Mapping[str, tuple[str, str]] | None = None) -> Route:
        """``GET /static/{name}``: the shared stylesheet and script, and *extra* files
        (name -> (content type, text))."""
        files = {n: (t, (HERE / "static" / n).read_text()) for n, t in _STATIC.items()}
        files.update(extra or {})

        async def static(request: Request) -> Response:
            found = files.get(request.path_params["name"])
            if found is None:
                return self.secure(Response("not found", status_code=404))
            content_type, text = found
            response = Response(text, media_type=content_type.split(";")[0])
            response.headers["content-type"] = content_type
            response.headers.update(SECURITY_HEADERS)
            response.headers["cache-control"] = "public, max-age=300"
            return response

        return Route("/static/{name}", static, methods=["GET", "HEAD"])


def svg(markup: str) -> Markup:
    """An SVG drawn by :mod:`keysentry.charts` (which escapes every label) for a template."""
    return Markup(markup)  # noqa: S704  (our own, escaped output)
