"""Fixtures of the adapter tests. A test module names the adapters it covers in
``ADAPTERS`` (for the ``call`` fixture) and its middleware in ``MIDDLEWARE`` (``mw_call``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keysentry import KeySentry
from keysentry.testing import FakeClock
from tests.adapters.support import Call, make_call


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "adapter" in metafunc.fixturenames:
        metafunc.parametrize("adapter", metafunc.module.ADAPTERS)
    if "middleware" in metafunc.fixturenames:
        metafunc.parametrize("middleware", [metafunc.module.MIDDLEWARE])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ks(clock: FakeClock) -> KeySentry:
    sentry = KeySentry("memory://", clock=clock)
    sentry.create_api_auth_app(
        app_slug="internal-api", name="Internal API", key_prefix="sk_live",
        permissions=["users:read", "users:write"], resources=["users/*"],
    )  # fmt: skip
    return sentry


@pytest.fixture
def call(adapter: str, ks: KeySentry) -> Iterator[Call]:
    """The app protected the *adapter* way: each behaviour test runs through every one."""
    yield from make_call(adapter, ks)


@pytest.fixture
def mw_call(middleware: str, ks: KeySentry) -> Iterator[Call]:
    """Only the middleware: options the decorators do not have."""
    yield from make_call(middleware, ks)
