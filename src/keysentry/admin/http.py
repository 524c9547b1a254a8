"""HTTP plumbing the admin routes share: Wacht's error shape, bounded JSON bodies."""

from __future__ import annotations

import json
import logging
from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from keysentry._fields import MAX_DEPTH, build, value_problem
from keysentry.errors import ConflictError, NotFoundError, StoreError, ValidationError

__all__ = ["MAX_BODY_BYTES", "HTTPProblem", "error_response", "problem_response", "read_body"]

logger = logging.getLogger("keysentry")
B = TypeVar("B", bound=BaseModel)
MAX_BODY_BYTES = 1 << 20


class HTTPProblem(Exception):
    """A request the admin API answers with *status* and one error message."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def error_response(
    status: int, errors: list[tuple[str, str | None]], headers: dict[str, str] | None = None
) -> JSONResponse:
    """Wacht's error shape, ``code`` being the status; ``field`` where one is to blame."""
    items = [
        {"message": message, "code": status} | ({"field": field} if field else {})
        for message, field in errors
    ]
    return JSONResponse({"errors": items}, status, headers=headers)


def problem_response(exc: Exception) -> JSONResponse:
    """The answer for a keysentry error (404, 409, 422, 503) or an :class:`HTTPProblem`;
    anything else is raised again."""
    if isinstance(exc, HTTPProblem):
        return error_response(exc.status, [(str(exc), exc.field)])
    if isinstance(exc, ValidationError):
        return error_response(422, [(e.message, e.field or None) for e in exc.errors])
    if isinstance(exc, NotFoundError):
        return error_response(404, [(str(exc), None)])
    if isinstance(exc, ConflictError):
        return error_response(409, [(str(exc), exc.field)])
    if isinstance(exc, StoreError):
        logger.warning("keysentry admin: the store failed: %s", exc)
        return error_response(503, [("The key store is unavailable; try again.", None)])
    raise exc


async def read_body(request: Request, model: type[B]) -> B:
    """Parse the JSON body into *model*: 413 past 1 MiB, 400 if not a JSON object, 422 (with
    the field's name) if it does not fit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        # ASCII digits only: int() would also read "٣", and choke on 5,000 digits
        if not (declared.isascii() and declared.isdigit()):
            raise HTTPProblem(400, "must be a number of bytes", field="content-length")
        if len(declared) > 18 or int(declared) > MAX_BODY_BYTES:
            raise HTTPProblem(413, f"The body is larger than {MAX_BODY_BYTES} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPProblem(413, f"The body is larger than {MAX_BODY_BYTES} bytes.")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        data = json.loads(body)  # NaN, Infinity and 1e999 are read, then refused by name
    except RecursionError:
        field = _deep_field(body)
        raise HTTPProblem(422, f"is nested more than {MAX_DEPTH} levels deep", field) from None
    except ValueError:
        raise HTTPProblem(400, "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise HTTPProblem(400, "The body must be a JSON object.")
    for name, value in data.items():
        problem = value_problem(value, MAX_DEPTH - 1)
        if problem:
            raise HTTPProblem(422, problem, field=str(name))
    return build(model, data)


def _deep_field(body: bytes) -> str | None:
    """The top-level field in which *body* nests too deeply (json.loads gave up on it)."""
    depth = 0
    in_string = escaped = False
    field_start = 0
    field = None
    for index, byte in enumerate(body):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
                if depth == 1 and field is None:
                    field = body[field_start:index].decode("utf-8", "replace")
        elif byte == 0x22:
            in_string = True
            field_start = index + 1
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_DEPTH:
                return field
        elif byte in (0x5D, 0x7D):
            depth -= 1
        elif byte == 0x2C and depth == 1:  # , : the next top-level field follows
            field = None
    return field
