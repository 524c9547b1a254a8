"""The API key format: generate, parse, hash and check keys. Pure: no I/O, no clock.

A key reads ``<key_prefix>_<body>``. The body is 32 base62 characters drawn from
:mod:`secrets` (about 190 bits) followed by a 6-character base62 CRC32 of everything before
it, as in GitHub's token format: a typo or a truncated paste is caught before any lookup.
``_`` never occurs in the body, so the prefix is everything before the last ``_``.

The stored form is the hex SHA-256 of the whole key. A fast hash is the right tool for a
high-entropy random key (there is no dictionary to brute-force; drf-api-key moved off
PBKDF2/Argon2 for this reason); hashes are compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import re
import secrets
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, cast

from keysentry.errors import KeyFormatError

if TYPE_CHECKING:
    from hashlib import _Hash


__all__ = [
    "ALPHABET",
    "BODY_LENGTH",
    "CHECKSUM_LENGTH",
    "MAX_KEY_LENGTH",
    "PREFIX_PATTERN",
    "RANDOM_LENGTH",
    "SUFFIX_LENGTH",
    "ParsedKey",
    "base62",
    "check_key",
    "checksum",
    "generate_key",
    "hash_key",
    "hashes_match",
    "parse_key",
    "random_token",
    "select_candidate",
    "sha256",
]


def _builtin_sha256() -> Callable[[bytes], _Hash]:
    # CPython's own SHA-256 (``_sha2`` from 3.12, ``_sha256`` before): for a key's one block
    # it costs a third less than OpenSSL's, whose per-call setup outweighs the hashing.
    for module in ("_sha2", "_sha256"):
        try:
            return cast("Callable[[bytes], _Hash]", importlib.import_module(module).sha256)
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256  # a Python built without it


#: ``hashlib.sha256``'s digest, by the fastest implementation at hand.
sha256 = _builtin_sha256()

#: Base62 in ASCII order, so fixed-width base62 strings sort like the numbers they encode.
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so every CRC32 fits
BODY_LENGTH = RANDOM_LENGTH + CHECKSUM_LENGTH
SUFFIX_LENGTH = 4
#: An app's ``key_prefix``: a lowercase letter, then 1-31 of ``[a-z0-9_]``.
PREFIX_PATTERN = r"[a-z][a-z0-9_]{1,31}"
MAX_KEY_LENGTH = 32 + 1 + BODY_LENGTH

_PREFIX_RE = re.compile(PREFIX_PATTERN, re.ASCII)


_PREFIXES_SEEN: dict[str, bool] = {}


TokenFactory = Callable[[int], str]


def random_token(length: int) -> str:
    """Return *length* base62 characters from the OS's CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def base62(number: int, width: int) -> str:
    """Encode a non-negative *number* as exactly *width* base62 digits (zero-padded)."""
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


# Every pair of base62 digits, so the checksum takes 3 divmods instead of 6 loop turns:
# this runs before every cache lookup (benchmarks/keys.py measures it).
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]


def checksum(text: str) -> str:
    """Return the 6-character base62 CRC32 of *text* (ASCII)."""
    high, low = divmod(zlib.crc32(text.encode("ascii")), 3844)
    top, mid = divmod(high, 3844)
    return _PAIRS[top] + _PAIRS[mid] + _PAIRS[low]


class ParsedKey(NamedTuple):
    """A key that passed the format and checksum checks.

    Immutable and cheap to build (a tuple). The secret never appears in ``repr``: only the
    prefix and the display suffix do.
    """

    prefix: str
    secret: str
    """The whole key, exactly as presented."""

    @property
    def suffix(self) -> str:
        """The last 4 characters, used to find candidates and to display the key."""
        return self.secret[-SUFFIX_LENGTH:]

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the whole key: the stored form and the cache key."""
        return hash_key(self.secret)

    def __repr__(self) -> str:
        return f"ParsedKey(prefix={self.prefix!r}, suffix={self.suffix!r})"


def generate_key(prefix: str, *, token_factory: TokenFactory = random_token) -> ParsedKey:
    """Create a new key under *prefix*.

    Args:
        prefix: the app's ``key_prefix``; must match :data:`PREFIX_PATTERN`.
        token_factory: returns *n* random base62 characters; tests inject a deterministic one.

    Raises:
        KeyFormatError: *prefix* is not a valid key prefix.
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise KeyFormatError("key prefix must match " + PREFIX_PATTERN)
    head = f"{prefix}_{token_factory(RANDOM_LENGTH)}"
    key = head + checksum(head)
    # Re-parse: a bad token_factory must fail here, not produce keys that never verify.
    return parse_key(key)


def check_key(text: str) -> str | None:
    """The key's prefix if *text* is a well-formed key with a matching checksum, else
    ``None``. Linear in ``min(len(text), MAX_KEY_LENGTH)``.

    The verification hot path: no exception (raising and catching one costs more than the
    check), no object built, every step inline (this runs before every cache lookup;
    benchmarks/keys.py measures it). :func:`parse_key` says what is wrong with a bad key.
    """
    if len(text) > MAX_KEY_LENGTH:
        return None
    # The body never holds "_", so the prefix is everything before the last one. isascii()
    # and isalnum() together admit exactly [0-9A-Za-z], in C, without a regex.
    prefix, sep, body = text.rpartition("_")
    if not sep or len(body) != BODY_LENGTH or not body.isascii() or not body.isalnum():
        return None
    # A service sees a handful of prefixes; remembering the verdict saves a regex per
    # request (a dict, not functools.lru_cache, whose call costs as much as the regex).
    ok = _PREFIXES_SEEN.get(prefix)
    if ok is None:
        ok = _PREFIX_RE.fullmatch(prefix) is not None
        if len(_PREFIXES_SEEN) < 512:  # bounded
            _PREFIXES_SEEN[prefix] = ok
    if not ok:
        return None
    # checksum(), inline. It is a public function of the key's text, not a secret: plain
    # == is fine.
    high, low = divmod(zlib.crc32(text[:-CHECKSUM_LENGTH].encode("ascii")), 3844)
    top, mid = divmod(high, 3844)
    if body[RANDOM_LENGTH:] != _PAIRS[top] + _PAIRS[mid] + _PAIRS[low]:
        return None
    return prefix


def _problem(text: str) -> str:
    """What is wrong with a key that :func:`check_key` refused (the slow path)."""
    if len(text) > MAX_KEY_LENGTH:
        return "API key is too long"
    prefix, sep, body = text.rpartition("_")
    if (
        not sep
        or len(body) != BODY_LENGTH
        or not body.isascii()
        or not body.isalnum()
        or not _PREFIX_RE.fullmatch(prefix)
    ):
        return "API key is malformed"
    return "API key checksum does not match"


def parse_key(text: object) -> ParsedKey:
    """Check that *text* is a well-formed key and split it.

    Accepts any object; anything but a valid key raises :class:`KeyFormatError` and nothing
    else. Runs in time linear in ``min(len(text), MAX_KEY_LENGTH)``.

    Raises:
        KeyFormatError: wrong type, length, alphabet, prefix or checksum.
    """
    if not isinstance(text, str):
        raise KeyFormatError("an API key must be a string")
    prefix = check_key(text)
    if prefix is None:
        raise KeyFormatError(_problem(text))
    return ParsedKey(prefix, text)


def hash_key(key: str) -> str:
    """Return the hex SHA-256 of *key*: what the store keeps instead of the secret."""
    return sha256(key.encode("ascii")).hexdigest()


def hashes_match(expected: str, actual: str) -> bool:
    """Compare two hex digests in constant time."""
    return hmac.compare_digest(expected, actual)


_DUMMY_DIGEST = hash_key("keysentry-dummy")


def select_candidate(digest: str, candidates: Sequence[tuple[str, str | None]]) -> int | None:
    """Index of the candidate whose current or previous hash is *digest*, else ``None``.

    Every hash is compared, in constant time and without stopping at a match, and a dummy
    comparison runs when there are no candidates: the time taken does not tell "no key with
    this suffix" from "wrong secret".
    """
    found = None
    for index, (current, previous) in enumerate(candidates):
        if hashes_match(current, digest):
            found = index
        if previous is not None and hashes_match(previous, digest):
            found = index
    if not candidates:
        hashes_match(_DUMMY_DIGEST, digest)
    return found
