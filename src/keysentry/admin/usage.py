"""The admin API's usage routes: ``GET /api-auth/apps/{app_slug}/usage``,
``GET /api-auth/keys/{key_id}/usage`` (paged by an opaque cursor) and
``GET /api-auth/apps/{app_slug}/usage/top``; and the ``?unused_for=`` and ``?owner_user_id=``
filters of the keys list."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from keysentry.admin import schemas as s
from keysentry.admin.http import HTTPProblem
from keysentry.usage import parse_duration

if TYPE_CHECKING:
    from keysentry.service import KeySentry

__all__ = ["app_usage", "key_usage", "owner_user_id", "top_keys", "unused_for"]

DEFAULT_POINTS = 1000
MAX_POINTS = 10_000
_MAX_PARAM = 200


def _param(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise HTTPProblem(400, "is given more than once", field=name)
    if values and (len(values[0]) > _MAX_PARAM or not values[0].isprintable()):
        raise HTTPProblem(400, f"must be at most {_MAX_PARAM} printable characters", field=name)
    return values[0] if values else None


def _number(request: Request, name: str, default: int, high: int) -> int:
    text = _param(request, name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 6 or not 1 <= int(text) <= high:
        raise HTTPProblem(400, f"must be an integer from 1 to {high}", field=name)
    return int(text)


def _instant(text: str, name: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        message = "must be an ISO 8601 time, e.g. 2026-12-31T23:59:59Z"
        raise HTTPProblem(400, message, field=name) from None
    if value.tzinfo is None:
        raise HTTPProblem(400, "must include a timezone, e.g. 2026-12-31T23:59:59Z", field=name)
    return value


def _range(request: Request) -> dict[str, Any]:
    since_text, until_text = _param(request, "since"), _param(request, "until")
    since: datetime | timedelta | None = None
    if since_text is not None:
        since = parse_duration(since_text) or _instant(since_text, "since")
    until = None if until_text is None else _instant(until_text, "until")
    return {"since": since, "until": until}


def unused_for(request: Request) -> timedelta | None:
    """``?unused_for=30d`` of ``GET /api-auth/apps/{app_slug}/keys``."""
    text = _param(request, "unused_for")
    if text is None:
        return None
    value = parse_duration(text)
    if value is None or value <= timedelta(0):
        raise HTTPProblem(400, "must be a duration like 30d, 12w or 36h", field="unused_for")
    return value


def owner_user_id(request: Request) -> str | None:
    """``?owner_user_id=user_1`` of ``GET /api-auth/apps/{app_slug}/keys`` (given once; the
    management call checks it is an id)."""
    return _param(request, "owner_user_id")


def _cursor(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    try:
        start, group = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
        if type(start) is int and isinstance(group, str):
            return start, group
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        pass
    raise HTTPProblem(400, "is not a cursor this API gave out", field="cursor")


def _next_cursor(start: int, group: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([start, group]).encode()).decode("ascii")


async def _usage(ks: KeySentry, request: Request, app_slug: str | None, key_id: str | None) -> Any:
    granularity = _param(request, "granularity") or "hour"
    group_by = _param(request, "group_by") or "outcome"
    limit = _number(request, "limit", DEFAULT_POINTS, MAX_POINTS)
    after = _cursor(_param(request, "cursor"))
    bounds = _range(request)

    def run() -> s.UsagePage:
        query = ks.usage_query(app_slug, key_id, bounds["since"], bounds["until"],
                               granularity, group_by)  # fmt: skip
        points = ks.usage_points(query._replace(after=after, limit=limit + 1))
        more = len(points) > limit
        points = points[:limit]
        cursor = None
        if more:
            last = points[-1]
            group = (last.outcome if group_by == "outcome" else last.key_id) or ""
            cursor = _next_cursor(int(last.start.timestamp()), group)
        return s.UsagePage(data=points, has_more=more, next_cursor=cursor)

    return await run_in_threadpool(run)


async def app_usage(ks: KeySentry, request: Request) -> Any:
    """``GET /api-auth/apps/{app_slug}/usage``"""
    return await _usage(ks, request, request.path_params["app_slug"], _param(request, "key_id"))


async def key_usage(ks: KeySentry, request: Request) -> Any:
    """``GET /api-auth/keys/{key_id}/usage``"""
    return await _usage(ks, request, None, request.path_params["key_id"])


async def top_keys(ks: KeySentry, request: Request) -> Any:
    """``GET /api-auth/apps/{app_slug}/usage/top``"""
    by = _param(request, "by") or "requests"
    limit = _number(request, "limit", 10, 1000)
    bounds = _range(request)
    keys = await run_in_threadpool(
        ks.get_top_keys, request.path_params["app_slug"], bounds["since"], bounds["until"],
        by, limit,
    )  # fmt: skip
    return s.TopKeys(data=keys)
