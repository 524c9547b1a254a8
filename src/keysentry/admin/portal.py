"""The admin API's portal routes, for apps that are not written in Python:
``POST /api-auth/portal-sessions`` mints a customer's link, ``POST
/api-auth/portal-sessions/end`` signs a customer out (see :mod:`keysentry.portal`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from keysentry.admin import schemas as s
from keysentry.admin.http import read_body
from keysentry.admin.openapi import Operation

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = ["ROUTES", "create_session", "end_sessions"]

#: Path -> method -> (the admin API's handler name, OpenAPI operation).
ROUTES: dict[str, dict[str, tuple[str, Operation]]] = {
    "/api-auth/portal-sessions": {
        "post": ("create_portal_session", ("A customer's single-use link to the portal (the "
                                           "url holds its token)", s.PortalSessionRequest,
                                           ("201", s.PortalSession), ())),
    },
    "/api-auth/portal-sessions/end": {
        "post": ("end_portal_sessions", ("Sign one owner out of one app's portal, on every "
                                         "worker", s.PortalSessionsEndRequest,
                                         ("200", s.PortalSessionsEnded), ())),
    },
}  # fmt: skip


async def create_session(ks: KeySentry, request: Request) -> s.PortalSession:
    """The new link (its ``url`` holds the token: hand it to the customer, log it nowhere)."""
    body = await read_body(request, s.PortalSessionRequest)
    return await run_in_threadpool(
        ks.create_portal_session, body.app_slug, body.owner_user_id,
        ttl_seconds=body.ttl_seconds, return_url=body.return_url,
        permissions=body.permissions, path=body.path,
    )  # fmt: skip


async def end_sessions(ks: KeySentry, request: Request) -> s.PortalSessionsEnded:
    """How many of the owner's links were forgotten."""
    body = await read_body(request, s.PortalSessionsEndRequest)
    ended = await run_in_threadpool(ks.end_portal_sessions, body.app_slug, body.owner_user_id)
    return s.PortalSessionsEnded(ended=ended)
