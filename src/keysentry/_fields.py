"""Field types and validation shared by the records (:mod:`keysentry.models`) and the admin
API's request bodies: names, slugs, patterns, metadata, storable values, and pydantic's
errors turned into keysentry's :class:`~keysentry.errors.ValidationError`."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    JsonValue,
    StringConstraints,
    field_validator,
)

from keysentry.core.keys import PREFIX_PATTERN
from keysentry.core.patterns import pattern_problem
from keysentry.errors import FieldError, ValidationError

__all__ = [
    "APP_SLUG_PATTERN", "MAX_DEPTH", "MAX_LIST_LENGTH", "MAX_METADATA_BYTES", "MAX_SCOPE_ID",
    "SCHEME_SLUG_PATTERN", "AppSlug", "IpNetworks", "KeyPrefix", "Metadata", "Name", "Patterns",
    "SchemeSlug", "ScopeId", "Text", "UtcDatetime", "build", "parse_network", "value_problem",
]  # fmt: skip

M = TypeVar("M", bound="BaseModel")
MAX_LIST_LENGTH = 100
MAX_METADATA_BYTES = 16_384
APP_SLUG_PATTERN = r"[a-z0-9][a-z0-9-]{1,62}"
SCHEME_SLUG_PATTERN = r"[a-z0-9][a-z0-9_-]{1,62}"


def _to_str(value: object) -> object:
    # Wacht accepts user/org/workspace ids as string or number; we store strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _check_patterns(values: list[str]) -> list[str]:
    if len(values) > MAX_LIST_LENGTH:
        raise ValueError(f"at most {MAX_LIST_LENGTH} patterns")
    for value in values:
        problem = pattern_problem(value)
        if problem:
            raise ValueError(f"{value!r} {problem}")
    return list(dict.fromkeys(values))  # drop repeats, keep order


def _no_list_is_empty(value: object) -> object:
    return [] if value is None else value


def _check_networks(values: list[str]) -> list[str]:
    if len(values) > MAX_LIST_LENGTH:
        raise ValueError(f"at most {MAX_LIST_LENGTH} networks")
    networks = []
    for value in values:
        networks.append(str(parse_network(value)))
    return list(dict.fromkeys(networks))


def parse_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR network (``203.0.113.7``, ``10.0.0.0/8``, ``2001:db8::/32``).

    Raises:
        ValueError: naming the value: malformed, or with host bits set.
    """
    if not isinstance(value, str) or not value or len(value) > 64 or value != value.strip():
        raise ValueError(f"{value!r} is not an IP address or CIDR network")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
        raise ValueError(f"{value!r} has host bits set: did you mean {loose}?") from None


MAX_DEPTH = 32


def value_problem(value: object, max_depth: int = MAX_DEPTH) -> str | None:
    """What no store can hold the same way, in a value and everything nested in it: a NUL
    character (PostgreSQL refuses it), NaN or infinity (not JSON; SQLite would answer
    ``null``), or nesting deeper than *max_depth*. Iterative: a value nested a thousand
    levels deep gets an answer, not a ``RecursionError``."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "must not contain NUL characters"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "must be a finite number (not NaN or infinity)"
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                return f"is nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                stack.extend((k, depth + 1) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


def _check_metadata(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    size = len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed")
    return value


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=2_000)]
#: The longest user, organization or workspace id a record holds.
MAX_SCOPE_ID = 128
ScopeId = Annotated[
    str, BeforeValidator(_to_str), StringConstraints(min_length=1, max_length=MAX_SCOPE_ID)
]
Patterns = Annotated[list[str], AfterValidator(_check_patterns)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
Metadata = Annotated[dict[str, JsonValue], AfterValidator(_check_metadata)]
#: Addresses and CIDR networks, normalised (``10.0.0.0/8``); none listed: any address.
IpNetworks = Annotated[
    list[str], BeforeValidator(_no_list_is_empty), AfterValidator(_check_networks)
]


def _syntax(pattern: str, description: str) -> AfterValidator:
    compiled = re.compile(pattern, re.ASCII)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not valid: {description}")
        return value

    return AfterValidator(check)


AppSlug = Annotated[
    str, _syntax(APP_SLUG_PATTERN, "use 2-63 of a-z, 0-9 and '-', starting with a-z or 0-9")
]
SchemeSlug = Annotated[
    str,
    _syntax(SCHEME_SLUG_PATTERN, "use 2-63 of a-z, 0-9, '-' and '_', starting with a-z or 0-9"),
]
KeyPrefix = Annotated[
    str, _syntax(PREFIX_PATTERN, "use 2-32 of a-z, 0-9 and '_', starting with a-z")
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: object) -> object:
        # before pydantic's own validation, which would recurse into a deep value
        problem = value_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def build(model: type[M], data: dict[str, Any]) -> M:
    """Validate *data* into *model*, raising keysentry's :class:`ValidationError`.

    Each pydantic error becomes a :class:`FieldError` named by its dotted location
    (``rules.0.duration``), with pydantic's "Value error, " boilerplate removed.
    """
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError([_field_error(e) for e in exc.errors()]) from None


def _field_error(error: Any) -> FieldError:
    field = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "is not a known field"
    elif error["type"] == "timezone_aware":
        message = "must include a timezone, e.g. 2026-12-31T23:59:59Z"
    return FieldError(field, message)
