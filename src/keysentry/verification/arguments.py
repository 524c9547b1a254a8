"""``ks.verify``'s arguments, checked and turned into what the pipeline takes (a
:class:`~keysentry.core.pipeline.Policy` and
:class:`~keysentry.core.pipeline.RequestFacts`), and the key a request presents as the bytes
the one-step path hashes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from keysentry.core.credits import MAX_CREDITS, is_amount
from keysentry.core.pipeline import Policy, RequestFacts, normal_method
from keysentry.errors import ValidationError

__all__ = [
    "bearer",
    "check_cost",
    "check_text",
    "check_types",
    "presented",
    "request_facts",
    "request_policy",
]

_new = tuple.__new__  # builds the NamedTuples (see core.pipeline)
_PERMISSIONS = "must be a string or a list of strings"


def bearer(facts: RequestFacts) -> bytes | None:
    """The key of a request with a valid method and one ASCII ``Authorization`` value, a
    bearer token or a bare key (as ``ks.verify`` takes it), and nothing else, as bytes: what
    :meth:`Verifier.quick` takes. Anything odd (spaces, another scheme) is left to the
    general path, which also decides when the bytes match no cached key."""
    authorization = facts.authorization
    if len(authorization) != 1 or not facts.method or facts.api_key:
        return None
    return presented(authorization[0])


def presented(value: str) -> bytes | None:
    """The key in one ``Authorization`` value, a bearer token or a bare key, as bytes;
    ``None`` for another scheme or non-ASCII text."""
    if value.startswith("Bearer "):
        value = value[7:]
    elif " " in value:  # another scheme
        return None
    if not value.isascii():
        return None
    return value.encode("ascii")


_POLICIES: dict[tuple[str, str | None, int], Policy] = {}
"""The policies asked for with one permission string: a program asks for the same few."""
_MAX_POLICIES = 1024


def request_policy(permissions: Sequence[str] | str, resource: str | None, cost: object) -> Policy:
    """The policy of a request described by ``ks.verify``'s arguments.

    Raises:
        ValidationError: *cost* is not an integer from 0 up.
    """
    if type(permissions) is str and type(cost) is int:
        asked = (permissions, resource, cost)
        policy = _POLICIES.get(asked)
        if policy is None:
            policy = _policy(permissions, resource, cost)
            if len(_POLICIES) < _MAX_POLICIES:
                _POLICIES[asked] = policy
        return policy
    return _policy(permissions, resource, cost)


def _policy(permissions: Sequence[str] | str, resource: str | None, cost: object) -> Policy:
    if isinstance(permissions, str):
        required: tuple[str, ...] = (permissions,)
    else:
        try:
            given: tuple[object, ...] = tuple(permissions)
        except TypeError:  # not iterable
            raise ValidationError.single("permissions", _PERMISSIONS) from None
        for permission in given:  # object: a compiled build would check str, with a TypeError
            if type(permission) is not str and not isinstance(permission, str):
                raise ValidationError.single("permissions", _PERMISSIONS)
        required = cast("tuple[str, ...]", given)
    # typed object: a compiled int parameter would raise TypeError
    spends = cost if type(cost) is int and 0 <= cost <= MAX_CREDITS else check_cost(cost)
    # tuple.__new__: the NamedTuples' own __new__ is a Python call each (ks.verify's cost)
    return _new(Policy, (required, resource, spends))


def request_facts(
    credential: str | None,
    method: str,
    path: str,
    api_key: str | None,
    client_ip: str | None,
) -> RequestFacts:
    """The facts of a request described by ``ks.verify``'s arguments."""
    return _new(RequestFacts, (
        normal_method(method),
        path if path.startswith("/") else "/" + path,
        (credential,) if credential is not None else (),
        (api_key,) if api_key is not None else (),
        client_ip,
    ))  # fmt: skip


def check_types(
    credential: object,
    method: object,
    path: object,
    resource: object,
    api_key: object,
    client_ip: object,
) -> None:
    """Refuse a text argument of ``ks.verify`` of the wrong type, before any typed function
    sees it (a compiled one would raise TypeError): the usual types are checked inline.

    Raises:
        ValidationError: naming the argument.
    """
    if not (
        type(method) is str
        and type(path) is str
        and (credential is None or type(credential) is str)
        and (resource is None or type(resource) is str)
        and (api_key is None or type(api_key) is str)
        and (client_ip is None or type(client_ip) is str)
    ):
        check_text(credential=credential, method=method, path=path, resource=resource,
                   api_key=api_key, client_ip=client_ip)  # fmt: skip


def check_text(**values: object) -> None:
    """Refuse the first of ``ks.verify``'s text arguments that is neither a string nor
    ``None`` (the method and path must be strings).

    Raises:
        ValidationError: naming the argument.
    """
    for field, value in values.items():
        required = field in ("method", "path")
        if not isinstance(value, str) and (required or value is not None):
            kind = "a string" if required else "a string or None"
            raise ValidationError.single(field, f"must be {kind}, not {type(value).__name__}")


def check_cost(cost: object, field: str = "cost") -> int:
    """A request's cost in credits: an integer from 0 to
    :data:`~keysentry.core.credits.MAX_CREDITS`.

    Raises:
        ValidationError: naming *field*.
    """
    if not is_amount(cost):
        raise ValidationError.single(field, "must be an integer from 0 to 10**15")
    return cost
