from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysentry.core.patterns import (
    covers,
    matches,
    parse_endpoint,
    parse_resource_template,
    pattern_problem,
)


def reference(pattern: str, text: str) -> bool:
    """The obvious (backtracking) model the fast matcher must agree with."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        pytest.param("users:*", "users:read", True, id="colon-star"),
        pytest.param("users:*", "users:", True, id="star-empty"),
        pytest.param("users:*", "user:read", False, id="literal-differs"),
        pytest.param("users/*", "users/42/orders", True, id="star-crosses-slash"),
        pytest.param("*", "", True, id="star-matches-empty"),
        pytest.param("?", "", False, id="question-needs-one"),
        pytest.param("a?c", "abc", True, id="question"),
        pytest.param("Users:read", "users:read", False, id="case-sensitive"),
        pytest.param("users:read", "users:read:all", False, id="whole-string"),
        pytest.param("*a*b*", "xxaxxbxx", True, id="segments"),
        pytest.param("*ab*ab", "abab", True, id="overlap"),
        pytest.param("a*a", "a", False, id="head-tail-overlap"),
        pytest.param("[x]", "[x]", True, id="brackets-literal"),
        pytest.param("a.c", "abc", False, id="dot-literal"),
    ],
)
def test_glob_table(pattern: str, text: str, expected: bool) -> None:
    assert matches(pattern, text) is expected
    assert reference(pattern, text) is expected


alphabet = st.sampled_from("ab:/*?")
patterns = st.text(alphabet, max_size=10)
texts = st.text(st.sampled_from("ab:/*?c"), max_size=14)


@settings(max_examples=3000)
@given(patterns, texts)
def test_matcher_agrees_with_reference_model(pattern: str, text: str) -> None:
    assert matches(pattern, text) == reference(pattern, text)


@given(st.text(max_size=40))
def test_every_pattern_matches_itself(pattern: str) -> None:
    assert matches(pattern, pattern)


def test_no_pathological_input() -> None:
    # a*a*a*...b against aaaa...: exponential for a backtracking matcher
    pattern = "a*" * 100 + "b"
    text = "a" * 10_000
    assert matches(pattern, text) is False


@settings(max_examples=2000)
@given(patterns, patterns, st.lists(texts, max_size=20))
def test_covers_is_sound(outer: str, inner: str, samples: list[str]) -> None:
    if covers(outer, inner):
        for text in [*samples, inner, inner.replace("*", "").replace("?", "z")]:
            if matches(inner, text):
                assert matches(outer, text), (outer, inner, text)


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        pytest.param("users:*", "users:read", True, id="star-grants-literal"),
        pytest.param("users:*", "users:*", True, id="same"),
        pytest.param("*", "anything:*", True, id="star-covers-all"),
        pytest.param("users:*", "*", False, id="narrow-cannot-grant-wide"),
        pytest.param("a?", "a*", False, id="question-does-not-cover-star"),
        pytest.param("a*b", "a*c*b", True, id="nested"),
        pytest.param("users:read", "users:write", False, id="different"),
    ],
)
def test_covers_table(outer: str, inner: str, expected: bool) -> None:
    assert covers(outer, inner) is expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("users:read", None, id="ok"),
        pytest.param("", "must not be empty", id="empty"),
        pytest.param("a b", "whitespace", id="space"),
        pytest.param("a\x00b", "whitespace", id="nul"),
        pytest.param("x" * 257, "at most 256", id="long"),
        pytest.param(5, "must be a string", id="not-str"),
    ],
)
def test_pattern_problem(value: object, problem: str | None) -> None:
    found = pattern_problem(value)
    assert found is None if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(
    ("text", "method", "path", "hits", "misses"),
    [
        pytest.param("*", None, "*", [("POST", "/x")], [], id="any"),
        pytest.param(
            "/users/*", None, "/users/*", [("DELETE", "/users/1")], [("GET", "/u")], id="path-only"
        ),
        pytest.param(
            "GET /users/*",
            "GET",
            "/users/*",
            [("GET", "/users/1"), ("HEAD", "/users/1")],
            [("POST", "/users/1")],
            id="method",
        ),
        pytest.param(
            "HEAD /x",
            "GET",
            "/x",
            [("GET", "/x"), ("HEAD", "/x")],
            [("PUT", "/x")],
            id="head-is-get",
        ),
    ],
)
def test_endpoint_patterns(
    text: str,
    method: str | None,
    path: str,
    hits: list[tuple[str, str]],
    misses: list[tuple[str, str]],
) -> None:
    endpoint = parse_endpoint(text)
    assert (endpoint.method, endpoint.path, endpoint.text) == (method, path, text)
    assert all(endpoint.matches(m, p) for m, p in hits)
    assert not any(endpoint.matches(m, p) for m, p in misses)


@pytest.mark.parametrize(
    "text",
    ["", "get /x", "GET x", "users", "GET  /x", "/a b", 7, "GET /x\n"],
)
def test_bad_endpoint_patterns_raise_value_error(text: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked by test_models
        parse_endpoint(text)


_literal = st.text("abcxyz0129-_.", min_size=1, max_size=6)
_value = st.text(st.characters(blacklist_characters="/", codec="utf-8"), min_size=1, max_size=8)


@st.composite
def _routes(draw: st.DrawFn) -> tuple[str, str, str, str, str]:
    """A route template, its resource template, a path it matches, that path's resource,
    and a path one required segment short, built together."""
    route, path, names, values = [], [], [], {}
    for index in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            name = f"p{index}"
            names.append(name)
            values[name] = draw(_value)
            route.append("{" + name + "}")
            path.append(values[name])
        else:
            literal = draw(_literal)
            route.append(literal)
            path.append(literal)
    tail = draw(st.sampled_from(["", "/*"]))
    rest = draw(st.sampled_from(["", "/", "/more/and/more"])) if tail else ""
    resource = "r/" + "/".join("{" + n + "}" for n in names)
    expected = "r/" + "/".join(values[n] for n in names)
    short = "/" + "/".join(path[:-1])
    return "/" + "/".join(route) + tail, resource, "/" + "/".join(path) + rest, expected, short


@given(_routes())
def test_resource_templates_capture_whole_segments(
    case: tuple[str, str, str, str, str],
) -> None:
    route, resource, path, expected, short = case
    template = parse_resource_template(route, resource)
    assert template.fill("GET", path) == expected
    assert template.fill("HEAD", path) == expected
    assert template.fill("GET", short) is None
    if not route.endswith("/*"):
        assert template.fill("GET", path + "/extra") is None
    assert parse_resource_template("POST " + route, resource).fill("GET", path) is None


def test_resource_template_matching_stays_linear_on_long_paths() -> None:
    # no nested repetition: a 200 kB path that almost matches is decided in one pass
    template = parse_resource_template("/a/{x}/b/{y}/c/*", "{x}/{y}")
    assert template.fill("GET", "/a/" + "x" * 100_000 + "/b/" + "y" * 100_000) is None
    assert template.fill("GET", "/a/1/b/2/c/" + "z/" * 50_000) == "1/2"
