"""The admin API's request and response bodies (:mod:`keysentry.admin.openapi` builds the
OpenAPI document from them).

Request bodies use Wacht's field names and reject unknown fields. They check shapes and
lengths only (and slugs' syntax, so that the OpenAPI document says it); every business rule
(a permission the app does not grant, an unknown scheme) stays in :class:`~keysentry.KeySentry`,
once. Responses are the models of :mod:`keysentry.models`, so the document and the answers
cannot drift apart: both come from the same pydantic classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, StrictInt

from keysentry._fields import APP_SLUG_PATTERN, SCHEME_SLUG_PATTERN
from keysentry.core.keys import PREFIX_PATTERN
from keysentry.models import (
    MAX_GRACE_SECONDS,
    ApiAuthApp,
    ApiKey,
    Event,
    IssuedKey,
    PortalSession,
    RateLimitRule,
    RateLimitScheme,
)
from keysentry.usage import KeyUsage, UsagePoint

__all__ = [
    "ApiAuthApp",
    "ApiKey",
    "AppPage",
    "AuthzCheckRequest",
    "AuthzCheckResponse",
    "CreateAppRequest",
    "CreateKeyRequest",
    "CreateSchemeRequest",
    "ErrorBody",
    "EventPage",
    "IssuedKey",
    "KeyPage",
    "PortalSession",
    "PortalSessionRequest",
    "PortalSessionsEndRequest",
    "PortalSessionsEnded",
    "RateLimitScheme",
    "RevokeKeyRequest",
    "RotateKeyRequest",
    "SchemePage",
    "TopKeys",
    "UpdateAppRequest",
    "UpdateSchemeRequest",
    "UsagePage",
]

Str = Annotated[str, Field(max_length=2_000)]
Id = Annotated[str | int, Field(union_mode="left_to_right")]
Patterns = Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=100)]
Networks = Annotated[
    list[Annotated[str, Field(max_length=64)]],
    Field(max_length=100, description="addresses and CIDR networks, IPv4 or IPv6"),
]


def _documented(pattern: str, max_length: int) -> Any:
    # The pattern is documented, not enforced here: the service checks it, with a better
    # message ("use 2-63 of a-z, 0-9 and '-'") than a regular expression.
    return Field(max_length=max_length, json_schema_extra={"pattern": f"^{pattern}$"})


Slug = Annotated[str, _documented(APP_SLUG_PATTERN, 63)]
SchemeSlug = Annotated[str, _documented(SCHEME_SLUG_PATTERN, 63)]
KeyPrefix = Annotated[str, _documented(PREFIX_PATTERN, 32)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _AppFields(_Body):
    # what creating and changing an app share; optional in both
    description: Str | None = None
    user_id: Id | None = None
    organization_id: Id | None = None
    workspace_id: Id | None = None
    rate_limit_scheme_slug: Str | None = None
    permissions: Patterns | None = None
    resources: Patterns | None = None
    allowed_ips: Networks | None = None


class CreateAppRequest(_AppFields):
    """``POST /api-auth/apps`` (Wacht's ``CreateApiAuthAppRequest``)."""

    app_slug: Slug
    name: Str
    key_prefix: KeyPrefix
    is_active: StrictBool = True


class UpdateAppRequest(_AppFields):
    """``PATCH /api-auth/apps/{app_slug}``: the fields sent change, the others stay."""

    name: Str | None = None
    key_prefix: KeyPrefix | None = None
    is_active: StrictBool | None = None


class CreateKeyRequest(_Body):
    """``POST /api-auth/apps/{app_slug}/keys`` (Wacht's ``CreateApiKeyRequest``)."""

    name: Str
    permissions: Patterns | None = None
    metadata: dict[str, JsonValue] | None = None
    expires_at: Str | None = Field(default=None, description="ISO 8601 with a timezone")
    owner: Str | None = None
    environment: Str | None = None
    rate_limit_scheme_slug: Str | None = None
    owner_user_id: Id | None = None
    organization_id: Id | None = None
    workspace_id: Id | None = None
    organization_membership_id: Id | None = None
    workspace_membership_id: Id | None = None
    org_role_permissions: Patterns | None = None
    workspace_role_permissions: Patterns | None = None
    allowed_ips: Networks | None = None
    # checked by the service (field errors named credits, refill.interval, ...)
    credits: Any = Field(default=None, json_schema_extra={"type": ["integer", "null"],
                                                          "minimum": 0})  # fmt: skip
    refill: dict[str, Any] | None = Field(
        default=None, description="{interval: daily|monthly, amount, refill_day (1-28)}"
    )


class CreditsRequest(_Body):
    """``POST /api-auth/keys/credits``: exactly one of ``set``, ``increment``,
    ``decrement``."""

    api_key_id: Str
    set: Any = Field(default=None, json_schema_extra={"type": ["integer", "null"]})
    increment: Any = Field(default=None, json_schema_extra={"type": ["integer", "null"]})
    decrement: Any = Field(default=None, json_schema_extra={"type": ["integer", "null"]})


class RevokeKeyRequest(_Body):
    """``POST /api-auth/keys/revoke`` (Wacht's ``RevokeApiKeyRequest``)."""

    api_key_id: Str
    reason: Str | None = None


class RotateKeyRequest(_Body):
    """``POST /api-auth/keys/rotate`` (Wacht's ``RotateApiKeyRequest``, plus an optional grace
    period during which the old secret still verifies)."""

    api_key_id: Str
    grace_seconds: StrictInt = Field(default=0, ge=0, le=MAX_GRACE_SECONDS)


class PortalSessionRequest(_Body):
    """``POST /api-auth/portal-sessions``: a single-use link to the customer portal for one
    owner of one app (:meth:`~keysentry.KeySentry.create_portal_session`)."""

    app_slug: Slug
    owner_user_id: Id
    ttl_seconds: StrictInt = Field(default=900, description="30 to 86400")
    return_url: Str | None = None
    permissions: Patterns | None = None
    path: Str = Field(default="/portal", description="where the portal is mounted")


class PortalSessionsEndRequest(_Body):
    """``POST /api-auth/portal-sessions/end``: sign one owner out of one app's portal
    (:meth:`~keysentry.KeySentry.end_portal_sessions`)."""

    app_slug: Slug
    owner_user_id: Id


class PortalSessionsEnded(BaseModel):
    """How many of the owner's links were forgotten (their sessions end at the next page)."""

    ended: int


class CreateSchemeRequest(_Body):
    """``POST /api-auth/rate-limit-schemes``."""

    slug: SchemeSlug
    name: Str
    description: Str | None = None
    rules: list[RateLimitRule] = Field(min_length=1, max_length=100)


class UpdateSchemeRequest(_Body):
    """``PATCH /api-auth/rate-limit-schemes/{slug}``."""

    name: Str | None = None
    description: Str | None = None
    rules: list[RateLimitRule] | None = Field(default=None, min_length=1, max_length=100)


class _Page(BaseModel):
    has_more: bool
    limit: int
    offset: int


class AppPage(_Page):
    """A page of apps: ``?limit=`` (1-100, default 50) and ``?offset=``."""

    data: list[ApiAuthApp]


class KeyPage(_Page):
    """A page of an app's keys (never their secrets)."""

    data: list[ApiKey]


class SchemePage(_Page):
    """A page of rate-limit schemes."""

    data: list[RateLimitScheme]


class EventPage(BaseModel):
    """Events after ``?after_seq=``, oldest first; ``has_more`` when ``limit`` cut them."""

    data: list[Event]
    has_more: bool


class UsagePage(BaseModel):
    """Usage points, ordered by start then group; pass ``next_cursor`` back as
    ``?cursor=`` (with the same query) for the next page."""

    data: list[UsagePoint]
    has_more: bool
    next_cursor: str | None = None


class TopKeys(BaseModel):
    """The keys with the most requests (or refusals) over the range."""

    data: list[KeyUsage]


class ErrorItem(BaseModel):
    """One error: Wacht's ``message`` and ``code`` (the HTTP status), plus keysentry's
    ``reason`` code (verification) or ``field`` (validation) where there is one."""

    message: str
    code: int
    reason: str | None = None
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: ``{"errors": [{"message", "code", …}]}``."""

    errors: list[ErrorItem]


# ------------------------------------------------------------------ verification
class Principal(_Body):
    """Who is asking: an API key (the only kind keysentry verifies)."""

    type: Literal["api_key"]
    value: Annotated[str, Field(max_length=512)]


class AuthzCheckRequest(_Body):
    """``POST /v1/authz/check``: Wacht's gateway request."""

    principal: Principal
    method: Annotated[str, Field(pattern=r"^[A-Za-z]{1,16}$")] = "GET"
    resource: Annotated[str, Field(max_length=8_192)] = Field(
        default="/", description="the request path, e.g. /users/42"
    )
    client_ip: Annotated[str, Field(max_length=64)] | None = None
    required_permissions: Patterns = Field(default_factory=list)


class RateLimitState(BaseModel):
    """One rule's state after this request."""

    policy: str = Field(description="the rule's short form, e.g. 100/minute:per_key")
    limit: int
    remaining: int
    reset: int = Field(description="seconds until the window ends")


class AuthzIdentity(BaseModel):
    """The key a verified request carries."""

    key_id: str
    key_name: str
    app_slug: str
    owner_user_id: str | None
    organization_id: str | None
    workspace_id: str | None
    expires_at: str | None


class AuthzCheckResponse(BaseModel):
    """The verdict (always HTTP 200: the verdict is in the body)."""

    allowed: bool
    status: int = Field(description="the status keysentry's middleware would answer")
    reason: str
    identity: AuthzIdentity | None
    permissions: list[str]
    metadata: dict[str, JsonValue]
    rate_limits: list[RateLimitState]
    retry_after: int | None
    headers: dict[str, str]
