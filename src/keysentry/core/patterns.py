"""The one glob dialect of permissions, resources and endpoint patterns. Pure.

``*`` matches any run of characters (``/`` and ``:`` included), ``?`` exactly one character,
everything else is literal and case-sensitive, and the whole string must match:
``users:*`` grants ``users:read``; ``users/*`` grants ``users/42`` and ``users/42/orders``.

No regular expressions: a pattern is split at its ``*`` once, and matching places each
literal segment at its leftmost position (which is optimal for ``*``-globs), so there is no
backtracking and no pathological input. :func:`matches` costs at most
O(len(pattern) x len(text)) and usually O(len(text)) through :meth:`str.find`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "MAX_PATTERN_LENGTH",
    "EndpointPattern",
    "Grants",
    "ResourceTemplate",
    "covers",
    "matches",
    "parse_endpoint",
    "parse_resource_template",
    "pattern_problem",
]

MAX_PATTERN_LENGTH = 256
_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")
_METHOD = re.compile(r"[A-Z]{1,16}", re.ASCII)


def pattern_problem(pattern: object) -> str | None:
    """Say what is wrong with a permission or resource pattern, or ``None`` if it is fine."""
    if not isinstance(pattern, str):
        return "must be a string"
    if not pattern:
        return "must not be empty"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"must be at most {MAX_PATTERN_LENGTH} characters"
    if _BAD_CHAR.search(pattern):
        return "must not contain whitespace or control characters"
    return None


def _match_here(segment: str, text: str, start: int) -> bool:
    """Does *segment* (literals and ``?``) match *text* exactly at *start*?"""
    if start < 0 or start + len(segment) > len(text):
        return False
    if "?" not in segment:
        return text.startswith(segment, start)
    return all(p == "?" or p == text[start + i] for i, p in enumerate(segment))


def _find(segment: str, text: str, start: int, end: int) -> int:
    """Leftmost index >= *start* where *segment* matches inside ``text[:end]``, or -1."""
    if "?" not in segment:
        return text.find(segment, start, end)
    for i in range(start, end - len(segment) + 1):
        if _match_here(segment, text, i):
            return i
    return -1


def matches(pattern: str, text: str) -> bool:
    """Return whether the glob *pattern* matches the whole of *text*."""
    if "*" not in pattern:
        return len(pattern) == len(text) and _match_here(pattern, text, 0)
    parts = pattern.split("*")
    head, tail = parts[0], parts[-1]
    if len(head) + len(tail) > len(text):
        return False
    end = len(text) - len(tail)
    if not (_match_here(head, text, 0) and _match_here(tail, text, end)):
        return False
    pos = len(head)
    for segment in parts[1:-1]:
        if segment:
            found = _find(segment, text, pos, end)
            if found < 0:
                return False
            pos = found + len(segment)
    return True


class Grants:
    """A set of patterns compiled for fast "is this text granted?" checks.

    Patterns without wildcards go into a set, patterns of the form ``prefix*`` into one tuple
    for :meth:`str.startswith` (a single C call however many there are), and only the rest
    are matched by :func:`matches`. ``users:*`` and ``users/*`` cost one ``startswith``.
    """

    __slots__ = ("_exact", "_general", "_prefixes", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        exact, prefixes, general = set(), [], []
        for pattern in self.patterns:
            star = pattern.find("*")
            if star < 0 and "?" not in pattern:
                exact.add(pattern)
            elif star == len(pattern) - 1 and "?" not in pattern:
                prefixes.append(pattern[:-1])
            else:
                general.append(pattern)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._general = tuple(general)

    def allows(self, text: str) -> bool:
        """Whether one of the patterns matches *text*."""
        if text in self._exact or text.startswith(self._prefixes):
            return True
        general = self._general
        return bool(general) and any(matches(p, text) for p in general)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"Grants({list(self.patterns)!r})"


def covers(outer: str, inner: str) -> bool:
    """Return whether every string *inner* matches is also matched by *outer*.

    Sound but not complete: ``True`` guarantees the inclusion; a few exotic equivalent pairs
    (``?*`` vs ``*?``) answer ``False``. Used to check that a key's permissions are granted
    by its app's patterns, where a false "no" is a clear error and a false "yes" would be a
    privilege escalation. Dynamic programming, O(len(outer) x len(inner)).
    """
    # inner's tokens are characters, "?" (any one char) and "*" (any run). outer's "*"
    # absorbs any run of tokens; outer's "?" absorbs one token that stands for exactly one
    # character (a literal or "?"); an outer literal absorbs only the same literal.
    n = len(inner)
    row = [False] * (n + 1)
    row[0] = True
    for p in outer:
        if p == "*":
            # prefix of inner matched by outer[:k+1] if any shorter prefix was matched
            seen = False
            for j in range(n + 1):
                seen = seen or row[j]
                row[j] = seen
        else:
            new = [False] * (n + 1)
            for j in range(1, n + 1):
                t = inner[j - 1]
                if row[j - 1] and t != "*" and (p == "?" or p == t):
                    new[j] = True
            row = new
    return row[n]


@dataclass(frozen=True, slots=True)
class EndpointPattern:
    """A parsed endpoint pattern: ``"*"``, ``"/users/*"`` or ``"GET /users/*"``.

    Attributes:
        method: the HTTP method required, or ``None`` for any. ``HEAD`` requests count as
            ``GET``.
        path: a glob over the request path (``"*"`` for any path).
        text: the pattern as written; rule counters per endpoint are keyed by it.
    """

    method: str | None
    path: str
    text: str
    _path: Grants = field(init=False, repr=False, compare=False)
    universal: bool = field(init=False, repr=False, compare=False)
    """Whether every request matches (``"*"``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_path", Grants([self.path]))
        object.__setattr__(self, "universal", self.method is None and self.path == "*")

    def matches(self, method: str, path: str) -> bool:
        """Return whether a request with *method* and *path* falls under this pattern."""
        if self.method is not None and route_method(method) != self.method:
            return False
        return self._path.allows(path)


def _split_method(text: str) -> tuple[str | None, str]:
    """``"GET /x"`` -> ``("GET", "/x")``, ``"/x"`` -> ``(None, "/x")``; HEAD is read as GET."""
    if " " not in text:
        return None, text
    method, _, path = text.partition(" ")
    if not _METHOD.fullmatch(method):
        raise ValueError(f"{text!r}: the method must be an uppercase HTTP method such as GET")
    return route_method(method), path


def route_method(method: str) -> str:
    """The method endpoint patterns compare: HEAD counts as GET (it is a GET without a
    body), every other method as itself."""
    return "GET" if method == "HEAD" else method


def parse_endpoint(text: object) -> EndpointPattern:
    """Parse an endpoint pattern.

    Raises:
        ValueError: with a message fit to show the user.
    """
    if not isinstance(text, str):
        raise ValueError("an endpoint pattern must be a string")
    if not text or len(text) > MAX_PATTERN_LENGTH:
        raise ValueError(f"an endpoint pattern must be 1-{MAX_PATTERN_LENGTH} characters")
    method, path = _split_method(text)
    if _BAD_CHAR.search(path):
        raise ValueError(f"{text!r}: the path must not contain whitespace or control characters")
    if path != "*" and not path.startswith("/"):
        raise ValueError(f"{text!r}: the path must be '*' or start with '/'")
    return EndpointPattern(method=method, path=path, text=text)


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class ResourceTemplate:
    """Where a middleware finds a request's resource: a route and a resource template.

    ``"GET /v1/users/{user_id}/*" -> "users/{user_id}"``: a request to ``GET
    /v1/users/42/orders`` has the resource ``users/42``. In the route, ``{name}`` is one whole
    path segment (no ``/``), a trailing ``/*`` is anything further (or nothing), the rest is
    literal; a method prefix works as in endpoint patterns (HEAD counts as GET). Matching is
    one regular expression without nested repetition: linear in the path's length.

    Attributes:
        method: the HTTP method required, or ``None`` for any.
        route: the route as written (without the method).
        resource: the resource template, filled from the route's parameters.
    """

    method: str | None
    route: str
    resource: str
    _regex: re.Pattern[str] = field(repr=False, compare=False)

    def fill(self, method: str, path: str) -> str | None:
        """The resource of a request to *method* *path*, or ``None`` if the route does not
        match it."""
        if self.method is not None and route_method(method) != self.method:
            return None
        match = self._regex.fullmatch(path)
        return None if match is None else self.resource.format_map(match.groupdict())


def parse_resource_template(route: object, resource: object) -> ResourceTemplate:
    """Compile a route -> resource template pair.

    Raises:
        ValueError: with a message fit to show the user.
    """
    if not isinstance(route, str) or not isinstance(resource, str):
        raise ValueError("a resource template maps a route string to a resource string")
    method, path = _split_method(route)
    if not path.startswith("/") or _BAD_CHAR.search(path) or len(path) > MAX_PATTERN_LENGTH:
        raise ValueError(f"{route!r}: the route must start with '/' (at most "
                         f"{MAX_PATTERN_LENGTH} characters, no whitespace)")  # fmt: skip
    segments = path[1:].split("/")
    tail = ""
    if segments[-1] == "*":
        segments.pop()
        tail = "(?:/.*)?"
    parts, names = [], []
    for segment in segments:
        whole = _PARAM.fullmatch(segment)
        if whole:
            name = whole.group(1)
            if name in names:
                raise ValueError(f"{route!r}: the parameter {{{name}}} appears twice")
            names.append(name)
            parts.append(f"(?P<{name}>[^/]+)")
        elif "{" in segment or "}" in segment or "*" in segment:
            raise ValueError(f"{route!r}: a parameter must be a whole segment, such as "
                             "/users/{user_id}, and '*' may only end the route")  # fmt: skip
        else:
            parts.append(re.escape(segment))
    wanted = _PARAM.findall(resource)
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ValueError(f"{route!r}: the resource {resource!r} uses {{{unknown[0]}}}, "
                         "which the route does not capture")  # fmt: skip
    leftover = _PARAM.sub("", resource)
    if "{" in leftover or "}" in leftover:
        raise ValueError(f"{route!r}: in the resource {resource!r}, braces may only name a "
                         "parameter, such as {user_id}")  # fmt: skip
    regex = re.compile("/" + "/".join(parts) + tail)
    return ResourceTemplate(method, path, resource, regex)
