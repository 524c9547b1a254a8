"""Invalidations over Redis pub/sub: another process's cache evicts within milliseconds,
with the event log turned off to prove it (docs/design.md §7)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysentry import KeySentry
from keysentry.stores.cached import CachedKeyStore
from keysentry.stores.notify import RedisChanges
from keysentry.testing import issue_key
from tests.conftest import REDIS_URL, require_redis

pytestmark = pytest.mark.redis


def serving(url: str, channel: str) -> KeySentry:
    """A process serving requests: event-log reads every hour, so only pub/sub is fast."""
    ks = KeySentry(url)
    ks.cache = CachedKeyStore(ks.store, sync_interval=3600, ttl=3600,
                              changes=RedisChanges(REDIS_URL, channel=channel))  # fmt: skip
    return ks


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[KeySentry, KeySentry]]:
    require_redis()
    url, channel = f"sqlite:///{tmp_path}/shared.db", f"keysentry:test:{secrets.token_hex(4)}"
    admin, app = serving(url, channel), serving(url, channel)
    yield admin, app
    admin.close()
    app.close()


def refused_within(ks: KeySentry, secret: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not ks.verify(secret).allowed:
            return True
        time.sleep(0.001)
    return False


def wait_until_subscribed(app: KeySentry, admin: KeySentry) -> None:
    """The subscriber starts with the first lookup; a probe message shows it is listening
    (what is published before that is lost, and left to the event log)."""
    assert app.cache.changes is not None
    assert admin.cache.changes is not None
    deadline = time.monotonic() + 5
    while not app.cache.changes.received:
        assert time.monotonic() < deadline, "the subscriber never started"
        admin.cache.changes.publish("key", "key_nobody")
        time.sleep(0.01)


@pytest.mark.parametrize("change", ["revoke", "rotate", "disable app", "scheme"])
def test_a_change_in_one_process_evicts_in_the_other(
    pair: tuple[KeySentry, KeySentry], change: str
) -> None:
    admin, app = pair
    admin.create_rate_limit_scheme("s1", "S", [{"unit": "minute", "max_requests": 5}])
    issued = issue_key(admin, rate_limit_scheme_slug="s1")
    issue_key(admin)  # so the event log has moved on
    assert app.verify(issued.secret).allowed  # cached; subscriber started by this lookup
    wait_until_subscribed(app, admin)
    if change == "revoke":
        admin.revoke_api_key(issued.key.id)
    elif change == "rotate":
        admin.rotate_api_key(issued.key.id)
    elif change == "disable app":
        admin.update_api_auth_app("test-app", is_active=False)
    else:
        admin.update_rate_limit_scheme("s1", rules=[{"unit": "minute", "max_requests": 1}])
        assert app.verify(issued.secret).allowed  # recompiled: 1 per minute, this is it
    assert refused_within(app, issued.secret, 5), "not evicted: pub/sub did not arrive"


def test_own_messages_are_not_applied_twice(pair: tuple[KeySentry, KeySentry]) -> None:
    admin, _ = pair
    issued = issue_key(admin)
    assert admin.verify(issued.secret).allowed  # starts admin's subscriber too
    admin.revoke_api_key(issued.key.id)
    time.sleep(0.2)
    assert admin.cache.changes is not None
    assert admin.cache.changes.received == 0


def test_closing_wakes_the_subscriber_with_a_message_others_ignore(
    pair: tuple[KeySentry, KeySentry],
) -> None:
    # without it, close() waits for the subscriber's next half-second poll
    import redis

    admin, app = pair
    issued = issue_key(admin)
    assert app.verify(issued.secret).allowed
    wait_until_subscribed(app, admin)
    assert app.cache.changes is not None
    assert admin.cache.changes is not None
    listener = redis.Redis.from_url(REDIS_URL).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(app.cache.changes.channel)
    try:
        listener.get_message(timeout=1)  # the subscription's confirmation
        before = admin.cache.changes.received
        app.close()
        message = listener.get_message(timeout=5)
        assert message is not None
        assert message["data"].endswith(b" stop")
        time.sleep(0.1)
        assert admin.cache.changes.received == before  # not a change: nothing evicted
    finally:
        listener.close()


def test_an_unreachable_redis_never_fails_a_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with KeySentry(f"sqlite:///{tmp_path}/k.db", limiter_url="redis://127.0.0.1:1/0") as ks:
        issued = issue_key(ks)
        with caplog.at_level(logging.WARNING, logger="keysentry"):
            assert ks.revoke_api_key(issued.key.id).revoked_at is not None
        assert "through the event log" in caplog.text
        assert ks.verify(issued.secret).reason == "key_revoked"


def test_keysentry_with_redis_publishes_by_default(tmp_path: Path) -> None:
    require_redis()
    url = f"sqlite:///{tmp_path}/k.db"
    with KeySentry(url, limiter_url=REDIS_URL) as ks:
        assert ks.cache.changes is not None
        assert ks.cache.changes.channel == "keysentry:changes:0"
    with KeySentry(url) as ks:
        assert ks.cache.changes is None  # no Redis: the event log alone


@pytest.mark.parametrize(
    ("url_a", "url_b", "namespace_b"),
    [
        (REDIS_URL.rsplit("/", 1)[0] + "/1", REDIS_URL.rsplit("/", 1)[0] + "/2", "keysentry"),
        (REDIS_URL, REDIS_URL, "other-deployment"),
    ],
    ids=["other-database", "other-namespace"],
)
def test_deployments_on_one_redis_do_not_evict_each_other(
    tmp_path: Path, url_a: str, url_b: str, namespace_b: str
) -> None:
    require_redis()
    ours = KeySentry(f"sqlite:///{tmp_path}/a.db", limiter_url=url_a)
    theirs = KeySentry(f"sqlite:///{tmp_path}/b.db", limiter_url=url_b,
                       redis_namespace=namespace_b)  # fmt: skip
    try:
        assert ours.cache.changes is not None
        assert theirs.cache.changes is not None
        assert ours.cache.changes.channel != theirs.cache.changes.channel
        for ks in (ours, theirs):
            ks.create_api_auth_app("shop", "Shop", "sk_shop")
        secret = theirs.create_api_key("shop", "k").secret
        assert theirs.verify(secret).allowed  # cached, and its subscriber running
        ours.verify("sk_shop_" + "0" * 38)  # start ours too
        deadline = time.monotonic() + 5
        probe = KeySentry(f"sqlite:///{tmp_path}/b.db", limiter_url=url_b,
                          redis_namespace=namespace_b)  # fmt: skip
        while theirs.cache.changes.received == 0 and time.monotonic() < deadline:
            probe.update_api_auth_app("shop", name="Shop")  # a real message on their channel
            time.sleep(0.05)
        probe.close()
        seen = theirs.cache.changes.received
        assert seen > 0  # their channel works ...
        ours.update_api_auth_app("shop", description="ours")
        ours.cache.clear(announce=True)
        time.sleep(0.5)
        assert theirs.cache.changes.received == seen  # ... and ours does not reach them
    finally:
        ours.close()
        theirs.close()
