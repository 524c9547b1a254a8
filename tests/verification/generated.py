"""What the differential tests of the one-step path share: a store with keys of every kind,
two KeySentry instances over it (one to decide as an adapter does, one by the general path
alone), and strategies for the credentials, paths and waits of generated requests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from keysentry import KeySentry, RateLimitRule
from keysentry.stores.memory import MemoryKeyStore
from keysentry.testing import FakeClock

START = 1_800_000_000.0  # a fixed start: every example begins in the same minute
ALL_TIME = datetime.fromtimestamp(START - 60, UTC)


class World:
    """The shared store, the two instances over it, and the keys' secrets."""

    def __init__(self) -> None:
        self.clock = FakeClock(START)
        store = MemoryKeyStore()
        # a cache entry lives five minutes: long enough for a key cached before it expires
        # (or before its old secret's grace ends) to be asked after
        options: dict[str, Any] = {"cache_ttl": 300.0, "clock": self.clock, "usage_interval": None,
                                   "sync_interval": None}  # fmt: skip
        self.quick = KeySentry(store=store, **options)
        self.general = KeySentry(store=store, **options)
        ks = self.quick
        two = [RateLimitRule(unit="minute", max_requests=2)]
        ks.create_rate_limit_scheme("two", "Two a minute", rules=two)
        ks.create_rate_limit_scheme("owner", "Three an hour, shared by the owner", rules=[
            {"unit": "hour", "max_requests": 3, "mode": "per_owner"},
            {"unit": "minute", "max_requests": 2, "mode": "per_key_and_endpoint"},
        ])  # fmt: skip
        ks.create_api_auth_app("api", "API", "sk_test", permissions=["users:*", "orders:read"],
                               resources=["users/*", "orders/1"])  # fmt: skip
        expires = datetime.fromtimestamp(START + 20, UTC)
        rotated = ks.create_api_key("api", "rotated", permissions=["users:read"])
        self.secrets = {
            "plain": ks.create_api_key("api", "plain", permissions=["users:read"]).secret,
            "inherits": ks.create_api_key("api", "inherits").secret,
            "limited": ks.create_api_key("api", "limited", permissions=["users:*"],
                                         rate_limit_scheme_slug="two").secret,
            "owner-1": ks.create_api_key("api", "o1", rate_limit_scheme_slug="owner",
                                         owner_user_id="u1").secret,
            "owner-2": ks.create_api_key("api", "o2", rate_limit_scheme_slug="owner",
                                         owner_user_id="u1").secret,
            "expiring": ks.create_api_key("api", "expiring", expires_at=expires).secret,
            "allowlist": ks.create_api_key("api", "ips", allowed_ips=["10.0.0.0/8"]).secret,
            "old": rotated.secret,
            "new": ks.rotate_api_key(rotated.key.id, grace_seconds=60).secret,
        }  # fmt: skip

    def close(self) -> None:
        self.quick.close()
        self.general.close()


def mangled(secret: str, position: int, replacement: str) -> str:
    index = position % len(secret)
    return secret[:index] + replacement + secret[index + 1 :]


NAMES = ["plain", "inherits", "limited", "owner-1", "owner-2", "expiring", "allowlist", "old",
         "new"]  # fmt: skip
ODD = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=80)
SEGMENTS = ["users", "orders", "1", "7", "", ".", "..", "%2e", "users.json", "é", "\x00", "a b"]
# the waits: within a cache entry's life, into the next minute, hour and TTL
WAITS = [0.0, 0.5, 7.0, 13.0, 29.0, 61.0, 3600.0]


def credential(cast: list[str]) -> st.SearchStrategy[tuple[Any, ...]]:
    """Mostly the keys of this example's *cast*, as they are (what the one-step path
    answers); then mangled, with a suffix, or any bytes (where it must defer)."""
    key = st.tuples(st.just("key"), st.sampled_from(cast))
    return st.one_of(
        key,
        key,
        key,
        key,
        key,
        st.tuples(st.just("mangled"), st.sampled_from(cast), st.integers(0, 70),
                  st.sampled_from(["A", "z", "0", "_", " ", "\x00", "é"])),
        st.tuples(st.just("suffixed"), st.sampled_from(cast), st.sampled_from(["x", " ", "_"])),
        st.tuples(st.just("odd"), ODD),
    )  # fmt: skip


PATH = st.one_of(
    st.just("/users/1"),
    st.just("/users/1"),
    st.sampled_from(["/users/1", "/users/7", "/orders/1"]),
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)),
)


@st.composite
def runs(
    draw: st.DrawFn, request: st.SearchStrategy[tuple[Any, ...]], max_size: int
) -> list[tuple[Any, ...]]:
    """A run of requests by one or two of the keys (a cast drawn per example, so a key
    comes back often): each ``(credential, drawn by request)``."""
    cast = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True))
    return draw(st.lists(st.tuples(credential(cast), request), min_size=1, max_size=max_size))


def secret_of(world: World, drawn: tuple[Any, ...]) -> str:
    kind = drawn[0]
    if kind == "key":
        return world.secrets[drawn[1]]
    if kind == "mangled":
        return mangled(world.secrets[drawn[1]], drawn[2], drawn[3])
    if kind == "suffixed":
        return world.secrets[drawn[1]] + str(drawn[2])
    return str(drawn[1])


def same_usage(world: World) -> tuple[dict[Any, int], dict[Any, int]]:
    """Both instances' usage, written one after the other: the first instance's counts
    doubled, and the store's counts after both (equal when they counted alike)."""
    world.quick.usage.flush()
    once = world.quick.get_usage("api", since=ALL_TIME, granularity="minute")
    world.general.usage.flush()
    twice = world.quick.get_usage("api", since=ALL_TIME, granularity="minute")
    return ({(p.start, p.outcome): 2 * p.count for p in once},
            {(p.start, p.outcome): p.count for p in twice})  # fmt: skip


def last_uses(ks: KeySentry) -> dict[str, Any]:
    """Each key's ``last_used_at``."""
    return {key.id: key.last_used_at for key in ks.list_api_keys("api")}
