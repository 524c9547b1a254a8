"""Redis clients by URL, for the limiter and the invalidation channel: one server, a Redis
Cluster, or a primary found through Sentinel.

* ``redis://host:6379/0``, ``rediss://…``, ``unix:///path.sock``: one server (redis-py's own
  URL syntax);
* ``redis+cluster://host:7000[,host:7001…]`` (``rediss+cluster://``; also redis-py's
  ``redis://host:7000?cluster=true``): a Redis Cluster, from any of its nodes; redis-py's
  cluster client follows ``MOVED``/``ASK`` and slot migrations;
* ``redis+sentinel://host:26379[,host:26379…]/SERVICE[/DB]`` (``rediss+sentinel://``): the
  primary that the sentinels name for *SERVICE*, followed across failovers.

A password in the URL is the data nodes' (``redis+sentinel://:secret@…``); the sentinels'
own password goes in ``?sentinel_password=``. redis is an optional extra, imported here only
when a client is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from keysentry.errors import ConfigurationError

__all__ = ["SCHEMES", "RedisTarget", "async_client", "close_client", "parse_redis_url",
           "pubsub_client", "sentinels_of", "sync_client"]  # fmt: skip

#: Every limiter URL scheme that names Redis.
SCHEMES = frozenset(
    {"redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel",
     "rediss+sentinel"}
)  # fmt: skip


@dataclass(frozen=True)
class RedisTarget:
    """What a Redis URL names.

    Attributes:
        kind: ``"server"``, ``"cluster"`` or ``"sentinel"``.
        url: the URL as given (a server's is handed to redis-py as is).
        nodes: ``(host, port)`` of the cluster's startup nodes or of the sentinels.
        service: the Sentinel service name.
        db: the database number (Sentinel; a cluster has only 0).
        username: the data nodes' user, if any.
        password: the data nodes' password, if any.
        sentinel_password: the sentinels' password, if any.
        ssl: TLS to the data nodes.
    """

    kind: Literal["server", "cluster", "sentinel"]
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def _nodes(netloc: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    hosts = netloc.rpartition("@")[2]
    nodes = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), str(default_port)
        host = host.strip("[]")
        if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"limiter URL {url!r}: {item!r} is not host:port")
        nodes.append((host, int(port)))
    return tuple(nodes)


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL (see the module's docstring).

    Raises:
        ConfigurationError: not a Redis URL, or a malformed node list or service.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme not in SCHEMES or "://" not in url:
        raise ConfigurationError(f"{url!r} is not a Redis URL")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    # redis-py's own spelling of a cluster: redis://host:port?cluster=true
    clustered = query.get("cluster", [""])[0].lower() in ("true", "1", "yes")
    if "+" not in scheme and not clustered:
        return RedisTarget("server", url)
    if clustered and scheme in ("redis", "rediss"):
        scheme += "+cluster"
    userinfo = parts.netloc.rpartition("@")[0]
    username, _, password = userinfo.partition(":")
    common: dict[str, Any] = {
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "ssl": scheme.startswith("rediss"),
    }
    if scheme.endswith("+cluster"):
        if parts.path.strip("/") not in ("", "0"):
            raise ConfigurationError(f"limiter URL {url!r}: a Redis Cluster has only database 0")
        return RedisTarget("cluster", url, _nodes(parts.netloc, 6379, url), **common)
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigurationError(
            f"limiter URL {url!r}: name the service, redis+sentinel://host:26379/SERVICE[/DB]"
        )
    sentinel_password = query.get("sentinel_password", [None])[0]
    return RedisTarget(
        "sentinel", url, _nodes(parts.netloc, 26379, url), service=path[0],
        db=int(path[1]) if len(path) == 2 else 0, sentinel_password=sentinel_password, **common,
    )  # fmt: skip


def _auth(target: RedisTarget) -> dict[str, Any]:
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.ssl:
        auth["ssl"] = True
    return auth


def sync_client(target: RedisTarget, **options: Any) -> Any:
    """A redis-py client for *target* (``Redis``, ``RedisCluster``, or Sentinel's primary)."""
    import redis
    from redis import cluster, sentinel

    return _client(target, redis.Redis, cluster, sentinel, options)


def async_client(target: RedisTarget, **options: Any) -> Any:
    """:func:`sync_client`, with redis-py's asyncio clients (for the running event loop)."""
    import redis.asyncio
    from redis.asyncio import cluster, sentinel

    return _client(target, redis.asyncio.Redis, cluster, sentinel, options)


def _client(
    target: RedisTarget, server: Any, cluster: Any, sentinel: Any, options: dict[str, Any]
) -> Any:
    # the sync and async flavours differ only in the modules the classes come from
    # (redis-py leaves some of them untyped, hence Any)
    if target.kind == "server":
        return server.from_url(target.url, **options)
    if target.kind == "cluster":
        nodes = [cluster.ClusterNode(host, port) for host, port in target.nodes]
        return cluster.RedisCluster(startup_nodes=nodes, **_auth(target), **options)
    sentinels = sentinel.Sentinel(
        list(target.nodes), sentinel_kwargs=_sentinel_options(target, options)
    )
    assert target.service is not None
    return sentinels.master_for(target.service, db=target.db, **_auth(target), **options)


def _sentinel_options(target: RedisTarget, options: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}
    if target.sentinel_password:
        kept["password"] = target.sentinel_password
    return kept


def pubsub_client(target: RedisTarget, **options: Any) -> Any:
    """A single-node client for pub/sub. In a cluster, a regular ``PUBLISH`` reaches every
    node over the cluster bus, so any one node serves subscribers (sharded pub/sub would
    need one subscription per shard, and invalidations are few and small)."""
    import redis

    if target.kind == "cluster":
        host, port = target.nodes[0]
        return redis.Redis(host=host, port=port, **_auth(target), **options)
    return sync_client(target, **options)


def sentinels_of(client: Any) -> list[Any]:
    """The clients a Sentinel-managed *client* asks for its primary (they hold connections
    to the sentinels, to be closed with it); none for other clients."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    return list(manager.sentinels) if manager is not None else []


def close_client(client: Any) -> None:
    """Close a sync client made here, and its clients of the sentinels."""
    client.close()
    for sentinel in sentinels_of(client):
        sentinel.close()
