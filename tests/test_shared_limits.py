"""Owner-shared rate limits: under ``per_owner``, ``per_organization`` and ``per_workspace``
every key of one owner (organization, workspace) in an app counts against one counter; a key
without that id is limited on its own, as under ``per_key``. On the in-process limiter and
on Redis."""

from __future__ import annotations

import pytest

from keysentry import KeySentry
from keysentry.limiters import Limiter
from keysentry.testing import FakeClock

MODES = {"per_owner": "owner_user_id", "per_organization": "organization_id",
         "per_workspace": "workspace_id"}  # fmt: skip


@pytest.mark.parametrize("mode", list(MODES))
def test_keys_of_one_owner_share_a_counter(limiter: Limiter, mode: str) -> None:
    field = MODES[mode]
    with KeySentry("memory://", limiter=limiter, clock=FakeClock(1_800_000_000),
                   usage_interval=None) as ks:  # fmt: skip
        ks.create_rate_limit_scheme(slug="shared", name="Shared", rules=[
            {"unit": "minute", "max_requests": 5, "mode": mode}])  # fmt: skip
        ks.create_api_auth_app("shop", "Shop", "sk_shop", rate_limit_scheme_slug="shared")
        a1 = ks.create_api_key("shop", "a1", **{field: "acme"}).secret
        a2 = ks.create_api_key("shop", "a2", **{field: "acme"}).secret
        b = ks.create_api_key("shop", "b", **{field: "globex"}).secret
        lone1 = ks.create_api_key("shop", "lone1").secret
        lone2 = ks.create_api_key("shop", "lone2").secret
        verdicts = [ks.verify(secret).allowed for secret in [a1, a2] * 4]
        assert verdicts == [True] * 5 + [False] * 3  # five for acme's two keys together
        refused = ks.verify(a1)
        assert refused.reason == "rate_limited"
        assert [ks.verify(b).allowed for _ in range(6)] == [True] * 5 + [False]
        # without the id a key shares with no one: five each
        assert [ks.verify(lone1).allowed for _ in range(6)] == [True] * 5 + [False]
        assert [ks.verify(lone2).allowed for _ in range(6)] == [True] * 5 + [False]


def test_the_same_owner_in_two_apps_is_counted_per_app() -> None:
    with KeySentry("memory://", clock=FakeClock(1_800_000_000), usage_interval=None) as ks:
        ks.create_rate_limit_scheme(slug="shared", name="Shared", rules=[
            {"unit": "minute", "max_requests": 2, "mode": "per_owner"}])  # fmt: skip
        for app in ("one", "two"):
            ks.create_api_auth_app(app, app, f"sk_{app}", rate_limit_scheme_slug="shared")
        first = ks.create_api_key("one", "k", owner_user_id="u").secret
        second = ks.create_api_key("two", "k", owner_user_id="u").secret
        assert [ks.verify(first).allowed for _ in range(3)] == [True, True, False]
        assert [ks.verify(second).allowed for _ in range(3)] == [True, True, False]
