"""The admin HTTP API: Wacht's ``/api-auth/…`` routes over a :class:`~keysentry.KeySentry`.

Every route but the OpenAPI document needs an admin key: a key of the ``keysentry-admin`` app
holding ``keysentry:admin`` (``keysentry admin-key create`` issues one). The key is verified by
keysentry itself, through the same pipeline as any request. Management calls are the
service's methods, run in Starlette's thread pool; their errors become Wacht's
``{"errors": [{"message", "code"}]}`` with 404, 409 or 422 (each error naming its ``field``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from keysentry.admin import portal, usage
from keysentry.admin import schemas as s
from keysentry.admin.auth import (
    ADMIN_APP_SLUG,
    ADMIN_PERMISSION,
    VERIFY_PERMISSION,
    authenticate,
)
from keysentry.admin.authz import DEFAULT_TRUSTED_PROXIES, authz_routes
from keysentry.admin.http import HTTPProblem, error_response, problem_response, read_body
from keysentry.admin.openapi import Operation, openapi_document
from keysentry.errors import ConflictError, KeySentryError
from keysentry.settings import check_flag

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = ["create_admin_app"]

logger = logging.getLogger("keysentry")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
OPENAPI_PATH = "/api-auth/openapi.json"
Handler = Callable[[Request], Awaitable[Response]]


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    # ASCII digits only: str.isdigit() is also true of "²" and "٣"
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not low <= int(text) <= high:
        raise HTTPProblem(400, f"must be an integer from {low} to {high}", field=name)
    return int(text)


def _page(request: Request, items: list[Any]) -> dict[str, Any]:
    limit = _query_int(request, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    offset = _query_int(request, "offset", 0, 0, 10**9)
    return {"data": items[offset : offset + limit], "has_more": len(items) > offset + limit,
            "limit": limit, "offset": offset}  # fmt: skip


def _not_admin_app(slug: str) -> str:
    # Disabling or deleting it over the API would lock every admin out; the CLI still can.
    if slug == ADMIN_APP_SLUG:
        raise ConflictError(
            f"the {ADMIN_APP_SLUG!r} app holds the admin keys and cannot be changed or deleted "
            "through the admin API (use the keysentry CLI)",
            field="app_slug",
        )
    return slug


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status, media_type="application/json")


def _fields(body: BaseModel) -> dict[str, Any]:
    return body.model_dump(exclude_unset=True)


class _Routes:
    """The handlers, bound to one :class:`KeySentry`."""

    def __init__(self, ks: KeySentry) -> None:
        self.ks = ks

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(function, *args, **kwargs)

    # ------------------------------------------------------------ apps
    async def create_app(self, request: Request) -> Response:
        body = await read_body(request, s.CreateAppRequest)
        fields = _fields(body)
        app = await self.call(
            self.ks.create_api_auth_app, fields.pop("app_slug"), fields.pop("name"),
            fields.pop("key_prefix"), **fields,
        )  # fmt: skip
        return _json(app, 201)

    async def list_apps(self, request: Request) -> Response:
        apps = await self.call(self.ks.list_api_auth_apps)
        return _json(s.AppPage(**_page(request, apps)))

    async def get_app(self, request: Request) -> Response:
        return _json(await self.call(self.ks.get_api_auth_app, request.path_params["app_slug"]))

    async def update_app(self, request: Request) -> Response:
        fields = _fields(await read_body(request, s.UpdateAppRequest))
        slug = _not_admin_app(request.path_params["app_slug"])
        return _json(await self.call(self.ks.update_api_auth_app, slug, **fields))

    async def delete_app(self, request: Request) -> Response:
        slug = _not_admin_app(request.path_params["app_slug"])
        return _json(await self.call(self.ks.delete_api_auth_app, slug))

    # ------------------------------------------------------------ keys
    async def create_key(self, request: Request) -> Response:
        fields = _fields(await read_body(request, s.CreateKeyRequest))
        slug = request.path_params["app_slug"]
        issued = await self.call(self.ks.create_api_key, slug, fields.pop("name"), **fields)
        return _json(issued, 201)

    async def list_keys(self, request: Request) -> Response:
        stale, owner = usage.unused_for(request), usage.owner_user_id(request)
        slug = request.path_params["app_slug"]
        keys = await self.call(self.ks.list_api_keys, slug, owner_user_id=owner, unused_for=stale)
        return _json(s.KeyPage(**_page(request, keys)))

    async def get_key(self, request: Request) -> Response:
        return _json(await self.call(self.ks.get_api_key, request.path_params["key_id"]))

    async def revoke_key(self, request: Request) -> Response:
        body = await read_body(request, s.RevokeKeyRequest)
        return _json(await self.call(self.ks.revoke_api_key, body.api_key_id, body.reason))

    async def rotate_key(self, request: Request) -> Response:
        body = await read_body(request, s.RotateKeyRequest)
        issued = await self.call(
            self.ks.rotate_api_key, body.api_key_id, grace_seconds=body.grace_seconds
        )
        return _json(issued)

    async def update_credits(self, request: Request) -> Response:
        body = await read_body(request, s.CreditsRequest)
        changes = {k: v for k, v in (("set", body.set), ("increment", body.increment),
                                     ("decrement", body.decrement)) if v is not None}  # fmt: skip
        return _json(await self.call(self.ks.update_credits, body.api_key_id, **changes))

    # ------------------------------------------------------------ schemes
    async def create_scheme(self, request: Request) -> Response:
        body = await read_body(request, s.CreateSchemeRequest)
        scheme = await self.call(
            self.ks.create_rate_limit_scheme, body.slug, body.name, body.rules,
            description=body.description,
        )  # fmt: skip
        return _json(scheme, 201)

    async def list_schemes(self, request: Request) -> Response:
        schemes = await self.call(self.ks.list_rate_limit_schemes)
        return _json(s.SchemePage(**_page(request, schemes)))

    async def get_scheme(self, request: Request) -> Response:
        return _json(await self.call(self.ks.get_rate_limit_scheme, request.path_params["slug"]))

    async def update_scheme(self, request: Request) -> Response:
        fields = _fields(await read_body(request, s.UpdateSchemeRequest))
        slug = request.path_params["slug"]
        return _json(await self.call(self.ks.update_rate_limit_scheme, slug, **fields))

    async def delete_scheme(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        return _json(await self.call(self.ks.delete_rate_limit_scheme, slug))

    # ------------------------------------------------------------ usage
    async def app_usage(self, request: Request) -> Response:
        return _json(await usage.app_usage(self.ks, request))

    async def key_usage(self, request: Request) -> Response:
        return _json(await usage.key_usage(self.ks, request))

    async def top_keys(self, request: Request) -> Response:
        return _json(await usage.top_keys(self.ks, request))

    # ------------------------------------------------------------ portal
    async def create_portal_session(self, request: Request) -> Response:
        return _json(await portal.create_session(self.ks, request), 201)

    async def end_portal_sessions(self, request: Request) -> Response:
        return _json(await portal.end_sessions(self.ks, request))

    # ------------------------------------------------------------ events
    async def list_events(self, request: Request) -> Response:
        after = _query_int(request, "after_seq", 0, 0, 2**62)
        limit = _query_int(request, "limit", 100, 1, 1000)
        events = await self.call(self.ks.list_events, after, limit + 1)
        return _json(s.EventPage(data=events[:limit], has_more=len(events) > limit))


# path -> method -> (handler name, OpenAPI operation)
_APPS, _KEYS, _SCHEMES = "/api-auth/apps", "/api-auth/keys", "/api-auth/rate-limit-schemes"
_PAGE = ("limit", "offset")
_USAGE = ("since", "until", "granularity", "group_by", "usage_limit", "cursor")
ROUTES: dict[str, dict[str, tuple[str, Operation]]] = {
    _APPS: {
        "post": ("create_app", ("Create an API auth app", s.CreateAppRequest,
                                ("201", s.ApiAuthApp), ())),
        "get": ("list_apps", ("List the live apps", None, ("200", s.AppPage), _PAGE)),
    },
    _APPS + "/{app_slug}": {
        "get": ("get_app", ("Get an app", None, ("200", s.ApiAuthApp), ())),
        "patch": ("update_app", ("Change an app's fields", s.UpdateAppRequest,
                                 ("200", s.ApiAuthApp), ())),
        "delete": ("delete_app", ("Delete an app; its keys stop working", None,
                                  ("200", s.ApiAuthApp), ())),
    },
    _APPS + "/{app_slug}/keys": {
        "post": ("create_key", ("Create an API key (the secret is returned this once)",
                                s.CreateKeyRequest, ("201", s.IssuedKey), ())),
        "get": ("list_keys", ("List an app's keys (no secrets); ?owner_user_id= keeps one "
                              "owner's, ?unused_for= the stale", None, ("200", s.KeyPage),
                              (*_PAGE, "owner_user_id", "unused_for"))),
    },
    _APPS + "/{app_slug}/usage": {
        "get": ("app_usage", ("Verifications over time, by outcome or key", None,
                              ("200", s.UsagePage), (*_USAGE, "key_id"))),
    },
    _APPS + "/{app_slug}/usage/top": {
        "get": ("top_keys", ("The keys with the most requests or refusals", None,
                             ("200", s.TopKeys), ("since", "until", "by", "top_limit"))),
    },
    _KEYS + "/revoke": {
        "post": ("revoke_key", ("Revoke a key: refused (403) from the next request on",
                                s.RevokeKeyRequest, ("200", s.ApiKey), ())),
    },
    _KEYS + "/rotate": {
        "post": ("rotate_key", ("Give a key a new secret; the old one stops verifying",
                                s.RotateKeyRequest, ("200", s.IssuedKey), ())),
    },
    _KEYS + "/credits": {
        "post": ("update_credits", ("Set, add to or take from a key's credits",
                                    s.CreditsRequest, ("200", s.ApiKey), ())),
    },
    _KEYS + "/{key_id}": {
        "get": ("get_key", ("Get a key (no secret)", None, ("200", s.ApiKey), ())),
    },
    _KEYS + "/{key_id}/usage": {
        "get": ("key_usage", ("One key's verifications over time", None,
                              ("200", s.UsagePage), _USAGE)),
    },
    _SCHEMES: {
        "post": ("create_scheme", ("Create a rate-limit scheme", s.CreateSchemeRequest,
                                   ("201", s.RateLimitScheme), ())),
        "get": ("list_schemes", ("List rate-limit schemes", None, ("200", s.SchemePage),
                                 _PAGE)),
    },
    _SCHEMES + "/{slug}": {
        "get": ("get_scheme", ("Get a rate-limit scheme", None, ("200", s.RateLimitScheme), ())),
        "patch": ("update_scheme", ("Change a scheme (applies to every app and key using it)",
                                    s.UpdateSchemeRequest, ("200", s.RateLimitScheme), ())),
        "delete": ("delete_scheme", ("Delete an unused scheme", None,
                                     ("200", s.RateLimitScheme), ())),
    },
    **portal.ROUTES,
    "/api-auth/events": {
        "get": ("list_events", ("The audit log, oldest first", None, ("200", s.EventPage),
                                ("after_seq", "event_limit"))),
    },
}  # fmt: skip


def guarded(ks: KeySentry, permission: str, handler: Handler) -> Handler:
    """Wrap *handler*: verify the caller's admin key first, and turn keysentry's errors
    into error answers."""

    async def endpoint(request: Request) -> Response:
        refusal = await authenticate(ks, request, permission)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except (HTTPProblem, KeySentryError) as exc:
            return problem_response(exc)
        except Exception:  # a bug must not become a 500: logged, answered as unavailable
            logger.exception("keysentry admin: %s %s failed", request.method, request.url.path)
            return error_response(503, [("The request could not be handled; try again.", None)])

    return endpoint


def _metrics_endpoint(ks: KeySentry, open_metrics: bool) -> Handler:
    from keysentry.metrics import exposition  # prometheus_client: an optional extra

    async def scrape(request: Request) -> Response:
        body, content_type = await run_in_threadpool(exposition)
        return Response(body, media_type=content_type)

    if open_metrics:
        return scrape
    return guarded(ks, VERIFY_PERMISSION, scrape)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, [(str(exc.detail), None)], headers)


def _management_routes(
    ks: KeySentry,
) -> tuple[list[BaseRoute], dict[str, dict[str, Operation]]]:
    """The admin-key-guarded management routes, and their OpenAPI operations by path."""
    routes = _Routes(ks)
    table: list[BaseRoute] = []
    operations: dict[str, dict[str, Operation]] = {}
    for path, methods in ROUTES.items():
        for method, (name, operation) in methods.items():
            handler = guarded(ks, ADMIN_PERMISSION, getattr(routes, name))
            table.append(Route(path, handler, methods=[method.upper()], name=name))
            operations.setdefault(path, {})[method] = operation
    return table, operations


def create_admin_app(
    ks: KeySentry,
    *,
    verification: bool = True,
    open_verification: bool = False,
    close_on_shutdown: bool = False,
    title: str = "keysentry admin API",
    trusted_proxies: Sequence[str] = DEFAULT_TRUSTED_PROXIES,
    metrics: bool = False,
    open_metrics: bool = False,
) -> Starlette:
    """The admin API (and, with *verification*, the verification endpoints) as an ASGI app.

    Args:
        ks: the service whose store the API manages.
        verification: also serve ``POST /v1/authz/check`` and the forward-auth endpoint
            ``/v1/authz/forward`` (see :mod:`keysentry.admin.authz`).
        open_verification: let ``/v1/authz/check`` answer callers without an admin key (only
            where nothing untrusted can reach it). Forward-auth is always open: the proxy
            passes the client's own key.
        close_on_shutdown: close *ks* when the server shuts down (for a server that owns
            it, as ``keysentry serve`` does; not when mounted in an app that uses *ks* too).
        title: the OpenAPI document's title.
        trusted_proxies: addresses or networks whose ``X-Forwarded-For`` / ``X-Real-IP``
            forward-auth believes (default: this machine's loopback).
        metrics: serve Prometheus metrics at ``GET /metrics`` (``keysentry[metrics]``), to
            an admin key (a verify-only one is enough: give that to the scraper).
        open_metrics: serve ``/metrics`` without a key (only where nothing untrusted can
            reach it).

    Mount it in your app, or run it with ``keysentry serve``. The OpenAPI 3.1 document is at
    ``/api-auth/openapi.json``.

    Raises:
        ConfigurationError: a flag that is not ``True`` or ``False``, named.
    """
    from keysentry import __version__

    for name, flag in (("verification", verification), ("open_verification", open_verification),
                       ("close_on_shutdown", close_on_shutdown), ("metrics", metrics),
                       ("open_metrics", open_metrics)):  # fmt: skip
        check_flag(name, flag)  # open_verification="false" would open it
    table, operations = _management_routes(ks)
    if verification:
        authz, authz_operations = authz_routes(
            ks, open_verification=open_verification, trusted_proxies=trusted_proxies
        )
        table.extend(authz)
        operations.update(authz_operations)
    document = openapi_document(operations, title=title, version=__version__)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    table.append(Route(OPENAPI_PATH, openapi, methods=["GET"], name="openapi"))
    if metrics:
        table.append(Route("/metrics", _metrics_endpoint(ks, open_metrics), methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await ks.aclose()

    return Starlette(
        routes=table,
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan if close_on_shutdown else None,
    )
