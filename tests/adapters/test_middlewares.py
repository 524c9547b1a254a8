"""Both middlewares side by side: construction-time checks, raw paths, a store that is down."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.testclient import TestClient
from werkzeug.test import Client

import keysentry.asgi
from keysentry import ConfigurationError, KeySentry
from keysentry.asgi import KeySentryMiddleware
from keysentry.core.keys import generate_key
from keysentry.wsgi import KeySentryWSGIMiddleware
from tests.adapters.support import (
    bearer,
    flask_app,
    refused_raw,
    starlette_app,
)

COMPILED_ASGI = not keysentry.asgi.__file__.endswith(".py")  # the mypyc wheel's build


@pytest.mark.parametrize("path", ["/users/../users/1", "/users//1", "/users/./1", "/users/.."])
def test_dot_and_empty_segments_are_400_in_both_middlewares(ks: KeySentry, path: str) -> None:
    # Real clients normalise such paths away, so the scope/environ is built by hand: this is
    # what a server passes on when a client sends the raw path.
    secret = ks.create_api_key("internal-api", "k").secret
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "",
             "headers": [(b"authorization", f"Bearer {secret}".encode())]}  # fmt: skip
    sent = refused_raw(ks, scope, {"type": "http.request", "body": b""})
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["errors"][0]["reason"] == "invalid_path"

    statuses: list[str] = []
    wsgi = KeySentryWSGIMiddleware(lambda e, s: [b"app reached"], sentry=ks)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path,
               "HTTP_AUTHORIZATION": f"Bearer {secret}"}  # fmt: skip
    body = b"".join(wsgi(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["400 Bad Request"]
    assert json.loads(body)["errors"][0]["reason"] == "invalid_path"


def test_unreachable_store_is_503_never_500() -> None:
    ks = KeySentry("postgresql://postgres@127.0.0.1:1/test")  # nothing listens on port 1
    well_formed = generate_key("sk_live").secret
    malformed = "sk_live_" + "a" * 32 + "000000"
    with TestClient(starlette_app(ks)) as client:
        assert client.get("/users/1", headers=bearer(malformed)).status_code == 401
        r = client.get("/users/1", headers=bearer(well_formed))
        assert (r.status_code, r.json()["errors"][0]["reason"]) == (503, "unavailable")
    assert Client(flask_app(ks)).get("/users/1", headers=bearer(well_formed)).status_code == 503
    ks.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"permissions": {"get /x": ["a"]}}, id="method-case"),
        pytest.param({"permissions": {"GET x": ["a"]}}, id="path-without-slash"),
        pytest.param({"permissions": {"GET /x": ["a b"]}}, id="bad-permission"),
        pytest.param({"exclude": ["health"]}, id="exclude-not-a-path"),
    ],
)
def test_bad_configuration_fails_at_construction(ks: KeySentry, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        KeySentryMiddleware(Starlette(), sentry=ks, **kwargs)
    with pytest.raises(ConfigurationError):
        KeySentryWSGIMiddleware(Flask(__name__).wsgi_app, sentry=ks, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exclude": 5}, "exclude must be a list of paths"),
        ({"permissions": "users:read"}, "permissions must map routes to permissions"),
        ({"allow_preflight": "no"}, "allow_preflight must be True or False"),  # truthy
        ({"read_authorization": "no"}, "read_authorization must be True, False or None"),
        ({"trusted_proxies": 10}, "trusted_proxies must be a list of addresses"),
        ({"trusted_proxies": ["10.0.0.1", 5]}, "trusted_proxies: 5 is not an IP address"),
        ({"sentry": None}, "sentry must be a KeySentry"),
        ({"sentry": "memory://"}, "sentry must be a KeySentry"),
    ],
)
def test_an_option_of_the_wrong_type_is_named(
    ks: KeySentry, kwargs: dict[str, Any], message: str
) -> None:
    options = {"sentry": ks, **kwargs}
    if COMPILED_ASGI and {"allow_preflight", "read_authorization"} & kwargs.keys():
        # compiled (mypyc), the constructor itself refuses a str where its signature says
        # bool, with a TypeError, before the check that names it runs
        with pytest.raises(TypeError, match=r"bool.* expected"):
            KeySentryMiddleware(Starlette(), **options)
    else:
        with pytest.raises(ConfigurationError, match=message):
            KeySentryMiddleware(Starlette(), **options)
    with pytest.raises(ConfigurationError, match=message):
        KeySentryWSGIMiddleware(Flask(__name__).wsgi_app, **options)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"/users/{id}": "users/{other}"}, "does not capture"),
        ({"/users/{id}/{id}": "users/{id}"}, "appears twice"),
        ({"/users/x{id}": "users/{id}"}, "whole segment"),
        ({"/users/*/orders": "users"}, "whole segment"),
        ({"users/{id}": "users/{id}"}, "must start with '/'"),
        ({"get /users/{id}": "users/{id}"}, "uppercase HTTP method"),
        ({"/users/{id}": "users/{id:>4}"}, "braces may only name"),
        ({"/users/{id}": 7}, "maps a route string"),
        (["/users/{id}"], "must map routes"),
    ],
)
def test_bad_resource_templates_are_named(ks: KeySentry, resources: Any, message: str) -> None:
    # at construction (Starlette's add_middleware would only build it at the first request)
    with pytest.raises(ConfigurationError, match=message):
        KeySentryMiddleware(starlette_app(ks), sentry=ks, resources=resources)
    with pytest.raises(ConfigurationError, match=message):
        KeySentryWSGIMiddleware(flask_app(ks).wsgi_app, sentry=ks, resources=resources)
