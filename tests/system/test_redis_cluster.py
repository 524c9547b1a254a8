"""The Redis limiter on a real 3-master Redis Cluster of our own (ports of our own, stopped by
pid): exact limits for apps on every master from several processes, one round trip per
request, and a master killed mid-run costing only its own apps."""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from keysentry import KeySentry
from tests.own_services import OwnRedisCluster

pytestmark = pytest.mark.system

ATTEMPTS = 5  # per app and process
LIMIT = 5
PROCESSES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedisCluster]:
    own = OwnRedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        own.start()
        yield own
    finally:
        own.stop()


def spread_apps(cluster: OwnRedisCluster, per_master: int, tag: str) -> dict[int, list[str]]:
    """App slugs whose counters live on each master: port -> slugs."""
    from redis.crc import key_slot

    found: dict[int, list[str]] = {node.port: [] for node in cluster.nodes}
    i = 0
    while any(len(slugs) < per_master for slugs in found.values()):
        slug = f"{tag}-{i}"
        i += 1
        # the counters are named keysentry:rl:{slug}:…, so the slot is the hash tag's
        port = cluster.master_of(key_slot(f"{{{slug}}}".encode())).port
        if len(found[port]) < per_master:
            found[port].append(slug)
    return found


def make_world(db: Path, slugs: list[str]) -> dict[str, str]:
    """One app per slug with LIMIT requests an hour, and a key each: slug -> secret."""
    with KeySentry(f"sqlite:///{db}") as ks:
        ks.create_rate_limit_scheme("hourly", "H", [{"unit": "hour", "max_requests": LIMIT}])
        secrets = {}
        for slug in slugs:
            ks.create_api_auth_app(app_slug=slug, name=slug, key_prefix="sk_live",
                                   rate_limit_scheme_slug="hourly")  # fmt: skip
            secrets[slug] = ks.create_api_key(slug, "k").secret
    return secrets


def hammer(args: tuple[str, str, dict[str, str], str]) -> dict[str, list[int]]:
    """In a process of its own: every key ATTEMPTS times; the statuses per app."""
    db, url, secrets, on_error = args
    ks = KeySentry(f"sqlite:///{db}", limiter_url=url, on_limiter_error=on_error,  # type: ignore[arg-type]
                   sync_interval=None, usage_interval=None)  # fmt: skip
    statuses: dict[str, list[int]] = {slug: [] for slug in secrets}
    for _ in range(ATTEMPTS):
        for slug, secret in secrets.items():
            statuses[slug].append(ks.verify(secret).status)
    ks.close()
    return statuses


def run(db: Path, url: str, secrets: dict[str, str], on_error: str) -> dict[str, list[int]]:
    # spawn: no inherited connections; an executor, not a Pool: a worker that dies is an
    # error here (BrokenProcessPool), not a wait forever
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [pool.submit(hammer, (str(db), url, secrets, on_error))
                   for _ in range(PROCESSES)]  # fmt: skip
        parts = [future.result(timeout=120) for future in futures]
    merged: dict[str, list[int]] = {slug: [] for slug in secrets}
    for part in parts:
        for slug, statuses in part.items():
            merged[slug] += statuses
    return merged


def test_apps_on_every_master_get_exactly_their_limit(
    cluster: OwnRedisCluster, tmp_path: Path
) -> None:
    spread = spread_apps(cluster, 3, "exact")
    slugs = [slug for group in spread.values() for slug in group]
    secrets = make_world(tmp_path / "ks.db", slugs)
    results = run(tmp_path / "ks.db", cluster.url, secrets, "closed")
    for slug, statuses in results.items():
        assert len(statuses) == ATTEMPTS * PROCESSES
        assert statuses.count(200) == LIMIT, (slug, statuses)
        assert statuses.count(429) == ATTEMPTS * PROCESSES - LIMIT, (slug, statuses)


def test_one_round_trip_per_request_and_the_async_driver(cluster: OwnRedisCluster) -> None:
    import asyncio

    import redis

    ks = KeySentry("memory://", limiter_url=cluster.url, on_limiter_error="closed")
    ks.create_rate_limit_scheme("two", "Two", [{"unit": "hour", "max_requests": 3},
                                              {"unit": "minute", "max_requests": 2}])  # fmt: skip
    ks.create_api_auth_app(app_slug="trips", name="T", key_prefix="sk_live",
                           rate_limit_scheme_slug="two")  # fmt: skip
    secret = ks.create_api_key("trips", "k").secret
    assert ks.verify(secret).status == 200  # script loaded, slot map known
    from redis.crc import key_slot

    node = cluster.master_of(key_slot(b"{trips}"))
    client = redis.Redis(port=node.port)
    before = int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    async def on_a_loop() -> int:
        try:
            return (await ks.averify(secret)).status
        finally:
            await ks.limiter.aclose()  # this loop ends here: its cluster client with it

    assert asyncio.run(on_a_loop()) == 200
    assert [ks.verify(secret).status for _ in range(2)] == [429, 429]  # 2 a minute
    after = int(client.info("commandstats")["cmdstat_evalsha"]["calls"])
    client.close()
    assert after - before == 3  # one script call per request, for both rules
    ks.close()


# redis-py's cluster client rebuilds its node table after a connection error and leaves the
# replaced nodes' sockets to the garbage collector, which closes them (with a warning)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_killed_master_costs_only_its_own_apps(cluster: OwnRedisCluster, tmp_path: Path) -> None:
    spread = spread_apps(cluster, 2, "killed")
    victim_port = cluster.nodes[1].port
    slugs = [slug for group in spread.values() for slug in group]
    secrets = make_world(tmp_path / "ks.db", slugs)
    ks = KeySentry(f"sqlite:///{tmp_path / 'ks.db'}", limiter_url=cluster.url,
                   on_limiter_error="closed", sync_interval=None)  # fmt: skip
    assert all(ks.verify(secrets[slug]).status == 200 for slug in slugs)  # all nodes up
    cluster.nodes[1].kill()
    after: dict[str, list[int]] = {slug: [] for slug in slugs}
    for _ in range(ATTEMPTS * 2):
        for slug in slugs:
            after[slug].append(ks.verify(secrets[slug]).status)
    for port, group in spread.items():
        for slug in group:
            statuses = after[slug]
            if port == victim_port:  # on_limiter_error="closed": 503, never 500
                assert set(statuses) == {503}, (slug, statuses)
            else:  # exact as before: LIMIT - 1 more admitted, then 429
                assert statuses.count(200) == LIMIT - 1, (slug, statuses)
                assert set(statuses) == {200, 429}, (slug, statuses)
    ks.close()
    gc.collect()  # those sockets are finalized here, under this test's filters


def test_redis_py_s_cluster_flag_means_the_cluster_client(cluster: OwnRedisCluster) -> None:
    # redis://host:port?cluster=true once got the single-node client: MOVED for most apps
    from keysentry.limiters.redis_cluster import RedisClusterLimiter

    port = cluster.nodes[0].port
    ks = KeySentry("memory://", limiter_url=f"redis://127.0.0.1:{port}/0?cluster=true",
                   on_limiter_error="closed")  # fmt: skip
    assert isinstance(ks.limiter, RedisClusterLimiter)
    ks.create_rate_limit_scheme("hourly", "H", [{"unit": "hour", "max_requests": LIMIT}])
    spread = spread_apps(cluster, 1, "flag")
    alive = {n.port for n in cluster.nodes if n.process is not None and n.process.poll() is None}
    assert len(alive) >= 2  # (a later test may kill a master: the module shares the cluster)
    for slug in (slug for port, group in spread.items() if port in alive for slug in group):
        ks.create_api_auth_app(app_slug=slug, name=slug, key_prefix="sk_live",
                               rate_limit_scheme_slug="hourly")  # fmt: skip
        secret = ks.create_api_key(slug, "k").secret
        statuses = [ks.verify(secret).status for _ in range(LIMIT + 2)]
        assert statuses == [200] * LIMIT + [429, 429], (slug, statuses)
    ks.close()


def test_cluster_urls_are_checked() -> None:
    from keysentry import ConfigurationError

    for bad in ("redis+cluster://127.0.0.1:notaport", "redis+cluster://h:7000/3"):
        with pytest.raises(ConfigurationError):
            KeySentry("memory://", limiter_url=bad)


def test_invalidations_reach_a_process_subscribed_to_another_node(
    cluster: OwnRedisCluster, tmp_path: Path
) -> None:
    # regular pub/sub: a PUBLISH on any node reaches subscribers on every node
    import secrets as tokens

    from keysentry.stores.cached import CachedKeyStore
    from keysentry.stores.notify import RedisChanges
    from tests.stores.test_pubsub import refused_within, wait_until_subscribed

    url, channel = f"sqlite:///{tmp_path}/shared.db", f"keysentry:test:{tokens.token_hex(4)}"
    first, last = cluster.nodes[0].port, cluster.nodes[-1].port
    group = []
    for port in (first, last):  # each subscribes through a different node
        ks = KeySentry(url)
        changes = RedisChanges(f"redis+cluster://127.0.0.1:{port}", channel=channel)
        ks.cache = CachedKeyStore(ks.store, sync_interval=3600, ttl=3600, changes=changes)
        group.append(ks)
    admin, app = group
    admin.create_api_auth_app(app_slug="api", name="A", key_prefix="sk_live")
    issued = admin.create_api_key("api", "k")
    assert app.verify(issued.secret).allowed  # cached in the serving process, subscriber up
    wait_until_subscribed(app, admin)
    admin.revoke_api_key(issued.key.id)
    assert refused_within(app, issued.secret, 2.0)
    for ks in group:
        ks.close()
