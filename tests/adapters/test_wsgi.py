"""The WSGI adapters: the behaviour table through the middleware and ``ks.require`` on
Flask."""

from __future__ import annotations

from tests.adapters.behaviour import *  # noqa: F403  (the shared table)

ADAPTERS = ["wsgi", "require-flask"]
MIDDLEWARE = "wsgi"
