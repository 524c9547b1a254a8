"""The admin API's OpenAPI 3.1 document, built from the pydantic models of
:mod:`keysentry.admin.schemas`: the document and the answers cannot drift apart."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from keysentry.admin.schemas import (
    ApiAuthApp,
    ApiKey,
    AppPage,
    AuthzCheckRequest,
    AuthzCheckResponse,
    CreateAppRequest,
    CreateKeyRequest,
    CreateSchemeRequest,
    ErrorBody,
    EventPage,
    IssuedKey,
    KeyPage,
    RateLimitScheme,
    RevokeKeyRequest,
    RotateKeyRequest,
    SchemePage,
    TopKeys,
    UpdateAppRequest,
    UpdateSchemeRequest,
    UsagePage,
)

__all__ = ["Operation", "openapi_document"]

_MODELS: tuple[type[BaseModel], ...] = (
    CreateAppRequest, UpdateAppRequest, CreateKeyRequest, RevokeKeyRequest, RotateKeyRequest,
    CreateSchemeRequest, UpdateSchemeRequest, AuthzCheckRequest, ApiAuthApp, ApiKey,
    IssuedKey, RateLimitScheme, AppPage, KeyPage, SchemePage, EventPage, ErrorBody,
    AuthzCheckResponse, UsagePage, TopKeys,
)  # fmt: skip
_REQUEST_MODELS = frozenset(_MODELS[:8])
_ERROR_STATUSES = {
    "400": "Malformed request: not JSON, or a bad query parameter",
    "401": "No API key, or not a valid one",
    "403": "The key may not do this (missing keysentry:admin, revoked, ...)",
    "404": "No such app, key, scheme or route",
    "409": "Conflicts with what is stored (duplicate slug, scheme in use, revoked key)",
    "413": "Body larger than 1 MiB",
    "422": "A field is invalid; each error names it",
    "429": "The admin key's rate limit",
    "503": "The store or the limiter is unreachable",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


# path -> method -> (summary, request model, (status, response model), query parameters)
Operation = tuple[str, type[BaseModel] | None, tuple[str, type[BaseModel]], tuple[str, ...]]


def openapi_document(
    operations: dict[str, dict[str, Operation]], *, title: str, version: str
) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document for *operations* from the pydantic models."""
    paths: dict[str, Any] = {}
    for path, methods in operations.items():
        for method, (summary, body, (status, response), query) in methods.items():
            operation: dict[str, Any] = {
                "summary": summary,
                "operationId": f"{method}_{path}".replace("/", "_")
                .replace("{", "")
                .replace("}", "")
                .replace("-", "_"),
                "parameters": [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    for name in _path_parameters(path)
                ]
                + [_QUERY[name] for name in query],
                "responses": {status: _json(response, summary)}
                | {code: _json(ErrorBody, text) for code, text in _ERROR_STATUSES.items()},
            }
            if body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(body)}},
                }
            paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": _component_schemas(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An admin key (`keysentry admin-key create`)",
                }
            },
        },
        "security": [{"bearerAuth": []}],
    }


@functools.cache
def _component_schemas() -> dict[str, Any]:
    """The models' JSON schemas: the same for every admin app, and some 60 ms to make."""
    _, top = models_json_schema(
        [(m, "validation" if m in _REQUEST_MODELS else "serialization") for m in _MODELS],
        ref_template="#/components/schemas/{model}",
    )
    return dict(top["$defs"])


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _integer(name: str, minimum: int, maximum: int, description: str) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def _string(name: str, description: str, choices: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"} | ({"enum": choices} if choices else {})
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


_QUERY = {
    "limit": _integer("limit", 1, 100, "page size (default 50)"),
    "offset": _integer("offset", 0, 10**9, "items to skip (default 0)"),
    "after_seq": _integer("after_seq", 0, 2**62, "events after this seq (default 0)"),
    "event_limit": _integer("limit", 1, 1000, "at most this many events (default 100)"),
    "usage_limit": _integer("limit", 1, 10_000, "at most this many points (default 1000)"),
    "top_limit": _integer("limit", 1, 1000, "at most this many keys (default 10)"),
    "since": _string("since", "how far back (15m, 24h, 30d) or an ISO 8601 time; "
                     "default 24h"),
    "until": _string("until", "an ISO 8601 time with a timezone; default now"),
    "granularity": _string("granularity", "bucket length (default hour)",
                           ["minute", "hour", "day"]),
    "group_by": _string("group_by", "one point per outcome or per key (default outcome)",
                        ["outcome", "key"]),
    "key_id": _string("key_id", "only this key's verifications"),
    "cursor": _string("cursor", "the next_cursor of the previous page"),
    "by": _string("by", "rank by requests or by refusals (default requests)",
                  ["requests", "refused"]),
    "owner_user_id": _string("owner_user_id", "only this owner's keys"),
    "unused_for": _string("unused_for", "only keys unused this long (30d, 12w) or never "
                          "used: the stale keys"),
}  # fmt: skip
