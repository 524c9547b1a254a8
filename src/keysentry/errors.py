"""Exceptions raised by keysentry.

The tree is small on purpose; catch the root to catch everything::

    KeySentryError                  never raised directly
    ├── ConfigurationError          bad settings, unknown URL scheme, missing extra
    ├── ValidationError(ValueError) bad input to a management call; names the field(s)
    ├── NotFoundError(LookupError)  no such app, key or scheme
    ├── ConflictError               the call clashes with what is stored (duplicate slug,
    │                               scheme still in use, rotating a revoked key)
    ├── StoreError                  the database failed; the driver error is ``__cause__``
    └── KeyFormatError(ValueError)  a string that is not a well-formed API key

Management calls validate everything before they write, so any of these means nothing was
written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "FieldError",
    "KeyFormatError",
    "KeySentryError",
    "NotFoundError",
    "StoreError",
    "ValidationError",
]


class KeySentryError(Exception):
    """Root of every keysentry exception. Never raised directly."""


class ConfigurationError(KeySentryError):
    """keysentry was set up wrongly: an unknown URL scheme, a missing optional extra, ..."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field.

    Attributes:
        field: dotted path of the offending field, e.g. ``"rules.0.duration"``.
        message: what is wrong with it, in plain words.
    """

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ValidationError(KeySentryError, ValueError):
    """Input to a management call was rejected; nothing was written.

    Attributes:
        errors: every problem found, each naming its field.
    """

    def __init__(self, errors: Sequence[FieldError]) -> None:
        if not errors:
            raise ValueError("ValidationError needs at least one FieldError")
        self.errors: tuple[FieldError, ...] = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    @classmethod
    def single(cls, field: str, message: str) -> ValidationError:
        """Build the error for one field."""
        return cls([FieldError(field, message)])

    @property
    def fields(self) -> list[str]:
        """The names of the offending fields, in order."""
        return [e.field for e in self.errors]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.errors)!r})"


class NotFoundError(KeySentryError, LookupError):
    """The app, key or scheme named does not exist (or was deleted).

    Attributes:
        kind: ``"app"``, ``"key"`` or ``"scheme"``.
        ident: the slug or id that was looked up.
    """

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"{kind} {ident!r} not found")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, ident={self.ident!r})"


class ConflictError(KeySentryError):
    """The call is well-formed but clashes with the stored state; nothing was written.

    Attributes:
        field: the field the clash is about, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, field={self.field!r})"


class StoreError(KeySentryError):
    """The key store could not be reached or failed. The driver's error is ``__cause__``."""


class KeyFormatError(KeySentryError, ValueError):
    """A string is not a well-formed API key (length, alphabet, prefix or checksum).

    The message never contains the offending string: it may be a real secret.
    """
