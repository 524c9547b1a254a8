"""Fixtures shared by the whole suite.

Tests that need PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) skip with a reason
when the server is unreachable, unless KEYSENTRY_REQUIRE_SERVICES=1 (set by .ci/run): then
they fail, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from keysentry import KeySentry
from keysentry.limiters import Limiter, MemoryLimiter
from keysentry.testing import FakeClock
from tests.databases import Pool, mysql_pool, postgres_pool

# No timed assertions: Hypothesis's per-example deadline fails tests on a busy machine.
settings.register_profile("keysentry", deadline=None)
settings.load_profile("keysentry")

PG_ADMIN_URL = os.environ.get("KEYSENTRY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("KEYSENTRY_REQUIRE_SERVICES") == "1"


_UNGROUPED = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook has named the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail every test of an ``xdist_group`` that pytest-xdist's ``--dist loadgroup`` (on by
    default) has not put with its group: it marks them by suffixing their node ids, which a
    newer pytest can silently ignore, and then the system tests would run two at a time and
    each module's shared stores would be filled on both workers."""
    if not config.getoption("loadgroup", default=False):
        return  # not a pytest-xdist worker of a --dist loadgroup run
    for item in items:
        group = item.get_closest_marker("xdist_group")
        if group is None:
            continue
        name = group.args[0] if group.args else group.kwargs.get("name", "default")
        if f"@{name}" not in item.nodeid:
            item.stash[_UNGROUPED] = (
                f"pytest-xdist did not group this test with the others of xdist_group "
                f"{name!r}: this pytest and pytest-xdist do not work together for "
                "--dist loadgroup; install the versions of pyproject.toml's dev extra "
                "(pip install -e '.[dev]')"
            )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """See :func:`pytest_collection_modifyitems`."""
    problem = item.stash.get(_UNGROUPED, None)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def _postgres_problem() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=2).close()
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable at {PG_ADMIN_URL}: {exc}"
    return None


_problems: dict[str, str | None] = {}  # service -> why it is unusable, probed once


def _require(service: str, probe: Callable[[], str | None]) -> None:
    """Skip (or, under KEYSENTRY_REQUIRE_SERVICES=1, fail) when *service* is unreachable."""
    if service not in _problems:
        _problems[service] = probe()
    problem = _problems[service]
    if problem is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"KEYSENTRY_REQUIRE_SERVICES=1 but {problem}")
        pytest.skip(problem)


def require_postgres() -> None:
    """Skip (or fail, in CI) when PostgreSQL is unreachable."""
    _require("postgres", _postgres_problem)


# PyMySQL >= 1.2 tries TLS on every connection, loading the system's CA certificates first
# (some 40 ms of CPU each); the loopback server has no TLS, so the tests say so
MYSQL_ADMIN_URL = os.environ.get(
    "KEYSENTRY_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test?ssl_disabled=true"
)


def _mysql_connect(database: str | None = None) -> Any:
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(MYSQL_ADMIN_URL)
    return pymysql.connect(
        host=url.host or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
        password=url.password or "", database=database, connect_timeout=2, autocommit=True,
        ssl_disabled="ssl_disabled" in url.query,
    )  # fmt: skip


def _mysql_problem() -> str | None:
    try:
        import pymysql
    except ImportError:
        return "PyMySQL is not installed (pip install -e '.[dev]')"
    try:
        _mysql_connect().close()
    except pymysql.Error as exc:
        return f"MySQL/MariaDB unreachable at {MYSQL_ADMIN_URL}: {exc}"
    return None


def require_mysql() -> None:
    """Skip (or fail, in CI) when MySQL/MariaDB is unreachable."""
    _require("mysql", _mysql_problem)


@pytest.fixture(scope="session")
def _mysql_pool() -> Iterator[Pool]:
    from sqlalchemy.engine import make_url

    def url(database: str) -> str:
        return make_url(MYSQL_ADMIN_URL).set(database=database).render_as_string(False)

    pool = mysql_pool(_mysql_connect, url)
    yield pool
    pool.close()


@pytest.fixture
def mysql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A MySQL/MariaDB URL of a database with no rows (made once, emptied between tests:
    tests/databases.py)."""
    with sql_database("mysql", request, tmp_path) as url:
        yield url


REDIS_URL = os.environ.get("KEYSENTRY_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _redis_problem() -> str | None:
    try:
        import redis
    except ImportError:
        return "redis is not installed (pip install -e '.[dev]')"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        return f"Redis unreachable at {REDIS_URL}: {exc}"
    return None


def require_redis() -> None:
    """Skip (or fail, in CI) when Redis is unreachable."""
    _require("redis", _redis_problem)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A counter-name prefix no other test uses; its keys are deleted afterwards."""
    require_redis()
    import redis

    prefix = f"kstest:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def limiter(request: pytest.FixtureRequest) -> Iterator[Limiter]:
    """Each limiter in turn: in this process, and on Redis with a prefix of its own."""
    if request.param == "memory":
        yield MemoryLimiter()
        return
    from keysentry.limiters.redis import RedisLimiter

    prefix = request.getfixturevalue("redis_prefix")
    # "closed", and a timeout no busy machine reaches: a Redis connect slowed past it must
    # fail the request (and the test) loudly, never admit it uncounted as "open" would
    redis_limiter = RedisLimiter(REDIS_URL, key_prefix=prefix, redis_time=False, timeout=10,
                                 on_error="closed")  # fmt: skip
    yield redis_limiter
    redis_limiter.close()


@pytest.fixture(scope="session")
def _pg_pool() -> Iterator[Pool]:
    # the schema, and commits that do not wait for the disk (a test database: one fsync
    # less per write, and a crash loses nothing a test needs)
    options = "?options=-csearch_path%3D{}%20-csynchronous_commit%3Doff"
    pool = postgres_pool(PG_ADMIN_URL, lambda schema: PG_ADMIN_URL + options.format(schema))
    yield pool
    pool.close()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema with no rows (made once, emptied
    between tests: tests/databases.py)."""
    with sql_database("postgres", request, tmp_path) as url:
        yield url


_POSTGRES = POSTGRES_PARAM = pytest.param("postgres", marks=pytest.mark.postgres)
_MYSQL = pytest.param("mysql", marks=pytest.mark.mysql)


@pytest.fixture(params=["memory", "sqlite", _POSTGRES, _MYSQL])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every store URL: the contract suites run once per backend."""
    if request.param == "memory":
        yield "memory://"
        return
    with sql_database(request.param, request, tmp_path) as url:
        yield url


@pytest.fixture(params=["sqlite", _POSTGRES, _MYSQL])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQL store URL: a SQLite file, the real PostgreSQL (a schema of its own), the real
    MySQL/MariaDB (a database of its own), each with no rows."""
    with sql_database(request.param, request, tmp_path) as url:
        yield url


@contextmanager
def sql_database(kind: str, request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    """A URL of an empty SQL database of *kind* ("sqlite", "postgres", "mysql"), given back
    when the block ends: what every database fixture hands out, whatever its scope (a SQLite
    file goes in *directory*)."""
    if kind == "sqlite":
        yield f"sqlite:///{directory}/keysentry.db"
        return
    if kind == "postgres":
        require_postgres()
        pool: Pool = request.getfixturevalue("_pg_pool")
    else:
        require_mysql()
        pool = request.getfixturevalue("_mysql_pool")
    with pool.database() as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ks(database_url: str, clock: FakeClock) -> Iterator[KeySentry]:
    """A KeySentry on each backend in turn, on a fake clock."""
    sentry = KeySentry(database_url, clock=clock)
    yield sentry
    sentry.close()
