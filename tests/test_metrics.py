"""Prometheus metrics: what each verification adds, per outcome, cache result, rule and
error; the key label only when asked for; ``/metrics`` on the admin app, behind a key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from keysentry import KeySentry
from keysentry.admin import create_admin_app, create_admin_key
from keysentry.metrics import publish_all
from keysentry.testing import FakeClock


def sample(name: str, **labels: str) -> float:
    publish_all()  # what a scrape does first
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Samples before and after: the families are per process and shared by every test."""

    def __init__(self, *series: tuple[str, dict[str, str]]) -> None:
        self.series = series
        self.before = [sample(name, **labels) for name, labels in series]

    def __call__(self) -> list[float]:
        now = [sample(name, **labels) for name, labels in self.series]
        return [after - before for after, before in zip(now, self.before, strict=True)]


@pytest.fixture
def ks() -> Iterator[KeySentry]:
    with KeySentry("memory://", metrics=True, clock=FakeClock(), usage_interval=None) as sentry:
        sentry.create_rate_limit_scheme(
            slug="two", name="Two", rules=[{"unit": "minute", "duration": 1, "max_requests": 2}]
        )
        sentry.create_api_auth_app("metered", "Metered", "sk_met", permissions=["a:read"],
                                   rate_limit_scheme_slug="two")  # fmt: skip
        yield sentry


def test_each_verification_counts_once(ks: KeySentry) -> None:
    secret = ks.create_api_key("metered", "k").secret
    total = "keysentry_verifications_total"
    delta = Delta(
        (total, {"app": "metered", "outcome": "ok"}),
        (total, {"app": "metered", "outcome": "rate_limited"}),
        (total, {"app": "metered", "outcome": "permission_denied"}),
        (total, {"app": "", "outcome": "invalid_key"}),
        (total, {"app": "", "outcome": "missing_key"}),
        ("keysentry_cache_lookups_total", {"result": "miss"}),
        ("keysentry_cache_lookups_total", {"result": "hit"}),
        ("keysentry_rate_limited_total", {"app": "metered", "rule": "2/minute:per_key"}),
        ("keysentry_verification_duration_seconds_count", {}),
    )
    for _ in range(3):
        ks.verify(secret)  # 2 admitted, then the rule refuses
    ks.verify(secret, permissions="a:write")
    ks.verify(secret[:-3] + "zzz")
    ks.verify(None)
    assert delta() == [2, 1, 1, 1, 1, 1, 3, 1, 6]


def test_the_key_label_only_when_asked(ks: KeySentry) -> None:
    issued = ks.create_api_key("metered", "k")
    ks.verify(issued.secret)
    labels = {"app": "metered", "key": issued.key.id, "outcome": "ok"}
    assert sample("keysentry_key_verifications_total", **labels) == 0
    with KeySentry("memory://", metrics=True, metrics_per_key=True) as per_key:
        per_key.create_api_auth_app("metered", "Metered", "sk_met")
        other = per_key.create_api_key("metered", "k")
        per_key.verify(other.secret)
        labels["key"] = other.key.id
        assert sample("keysentry_key_verifications_total", **labels) == 1


def test_store_errors_are_counted(ks: KeySentry) -> None:
    secret = ks.create_api_key("metered", "k").secret

    def down(*args: Any) -> Any:
        from keysentry import StoreError

        raise StoreError("memory store failed: on purpose")

    ks.store.find_candidates = down  # type: ignore[method-assign]
    delta = Delta(("keysentry_store_errors_total", {}))
    assert ks.verify(secret).status == 503
    assert delta() == [1]


def test_metrics_route_wants_an_admin_key(ks: KeySentry) -> None:
    admin = create_admin_key(ks, verify_only=True).secret
    customer = ks.create_api_key("metered", "k").secret
    client = TestClient(create_admin_app(ks, metrics=True))
    assert client.get("/metrics").status_code == 401
    assert (
        client.get("/metrics", headers={"Authorization": f"Bearer {customer}"}).status_code == 403
    )
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'keysentry_verifications_total{app="keysentry-admin",outcome="ok"}' in scraped.text
    assert client.post("/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 405
    opened = TestClient(create_admin_app(ks, metrics=True, open_metrics=True))
    assert opened.get("/metrics").status_code == 200
    assert TestClient(create_admin_app(ks)).get("/metrics").status_code == 404


def test_counts_reach_prometheus_without_a_scrape(ks: KeySentry) -> None:
    # the background publisher (for the other workers' scrapes), not only a scrape here
    import time

    assert ks.metrics is not None
    ks.metrics.interval = 0.05
    ks.metrics.publish()  # starts afresh
    name, labels = "keysentry_verifications_total", {"app": "", "outcome": "missing_key"}
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    ks.verify(None)
    deadline = time.monotonic() + 10
    while (REGISTRY.get_sample_value(name, labels) or 0.0) == before:
        assert time.monotonic() < deadline, "never published"
        time.sleep(0.01)
    assert REGISTRY.get_sample_value(name, labels) == before + 1


def test_metrics_app_to_mount(ks: KeySentry) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from keysentry.metrics import metrics_app

    app = Starlette(routes=[Mount("/metrics", app=metrics_app())])
    ks.verify(None)
    body = TestClient(app).get("/metrics/").text
    assert "keysentry_verification_duration_seconds_bucket" in body


def test_close_publishes_and_stops_the_publisher() -> None:
    import threading

    sentry = KeySentry("memory://", metrics=True, usage_interval=None)
    assert sentry.metrics is not None
    sentry.metrics.interval = 3600.0  # only close() can publish in time
    name, labels = "keysentry_verifications_total", {"app": "", "outcome": "missing_key"}
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    sentry.verify(None)
    publisher = sentry.metrics._thread
    assert publisher is not None
    assert publisher.is_alive()
    sentry.close()
    assert REGISTRY.get_sample_value(name, labels) == before + 1
    assert not publisher.is_alive()
    assert publisher not in threading.enumerate()
