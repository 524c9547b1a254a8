"""Find the one API key a request carries. Pure.

Sources: ``Authorization: Bearer <key>`` (scheme case-insensitive, spaces or tabs between) or a
bare key as the whole ``Authorization`` value, and optionally ``X-API-Key: <key>``.

* no credential (or only another scheme, such as ``Basic``): ``missing_key``;
* more than one ``Authorization`` header, an ``Authorization`` and an ``X-API-Key`` that
  disagree, extra words, or a value longer than :data:`MAX_CREDENTIAL_LENGTH`: ``invalid_key``.

The result says nothing about whether the key is well-formed; :func:`keys.parse_key` decides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from keysentry.core.decision import Reason

__all__ = ["MAX_CREDENTIAL_LENGTH", "extract_credential"]

MAX_CREDENTIAL_LENGTH: Final = 256
# header values beyond this are refused before any scanning (a 1 MB header costs nothing)
_MAX_HEADER_LENGTH: Final = MAX_CREDENTIAL_LENGTH + 64
# "scheme SP/HTAB credentials": the two classes are disjoint, so matching is linear
_TWO_WORDS = re.compile(r"([^ \t]+)[ \t]+([^ \t]+)")
_WHITESPACE = " \t"


def _from_authorization(value: str) -> str | Reason | None:
    """The key in one Authorization value; ``None`` for another scheme; a Reason if bad."""
    if len(value) > _MAX_HEADER_LENGTH:
        return Reason.INVALID_KEY
    value = value.strip(_WHITESPACE)
    if not value:
        return None
    if " " not in value and "\t" not in value:
        # "Bearer" with nothing after it is a broken bearer header; anything else is a bare key
        return Reason.INVALID_KEY if value.lower() == "bearer" else value
    match = _TWO_WORDS.fullmatch(value)
    if match is None:
        return Reason.INVALID_KEY
    scheme, token = match.groups()
    return token if scheme.lower() == "bearer" else None


def extract_credential(
    authorization: Sequence[str],
    api_key: Sequence[str] = (),
) -> str | Reason:
    """Return the presented key, or the :class:`Reason` to refuse the request.

    Args:
        authorization: every ``Authorization`` header value (decoded as latin-1).
        api_key: every ``X-API-Key`` value, when that header is enabled; else empty.
    """
    found: str | None = None
    if authorization:
        if len(authorization) > 1:
            return Reason.INVALID_KEY
        result = _from_authorization(authorization[0])
        if isinstance(result, Reason):
            return result
        found = result
    if api_key:
        if len(api_key) > 1 or len(api_key[0]) > _MAX_HEADER_LENGTH:
            return Reason.INVALID_KEY
        token = api_key[0].strip(_WHITESPACE)
        if not token or " " in token or "\t" in token:
            return Reason.INVALID_KEY
        if found is not None and token != found:
            return Reason.INVALID_KEY
        found = token
    if found is None:
        return Reason.MISSING_KEY
    if len(found) > MAX_CREDENTIAL_LENGTH:
        return Reason.INVALID_KEY
    return found
