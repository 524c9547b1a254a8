"""Every read on the verification path uses an index, on every SQL store: the plans are read
from the databases themselves (EXPLAIN QUERY PLAN, EXPLAIN), so a lookup stays flat as an
app's keys grow."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from keysentry import KeySentry
from keysentry.stores._sql_schema import (
    EVENTS_AFTER,
    FIND_CANDIDATES,
    GET_APP_BY_ID,
    GET_KEY,
    GET_SCHEME,
    OWNER_KEYS,
)
from keysentry.stores.sql import SQLKeyStore
from tests.conftest import sql_database

KEYS = 200
# every test of this module on one worker: its stores (200 keys each, per store and rotation)
# are then filled once, not once on every worker that runs some of its tests
pytestmark = pytest.mark.xdist_group("plans")


_STORES = [("sqlite", ()), ("postgres", pytest.mark.postgres), ("mysql", pytest.mark.mysql)]
_ROTATIONS = [(0, "none-rotated"), (2, "half-rotated")]


@pytest.fixture(scope="session")
def _stores() -> Iterator[tuple[ExitStack, dict[tuple[str, int], Any]]]:
    """The module's filled stores, each made the first time a test asks for it and given
    back when the session ends: once per store and rotation, whatever order the tests run
    in (a module fixture is made again whenever another module's tests run between this
    one's, as they do under pytest-xdist, and a parametrized one whenever the order moves
    between its parameters)."""
    with ExitStack() as stack:
        yield stack, {}


@pytest.fixture(
    params=[pytest.param((kind, every), marks=marks, id=f"{label}-{kind}")
            for every, label in _ROTATIONS for kind, marks in _STORES],
)  # fmt: skip
def filled(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _stores: tuple[ExitStack, dict[tuple[str, int], Any]],
) -> Any:
    """A store with one app of KEYS keys (none, or every second one, rotated with a grace
    period), analysed: keys that never rotate leave NULLs in the statistics. Shared by the
    module's tests, which only read plans."""
    stack, made = _stores
    kind, every = request.param
    if (kind, every) not in made:
        url = stack.enter_context(sql_database(kind, request, tmp_path_factory.mktemp("plans")))
        made[kind, every] = stack.enter_context(_filled(url, every))
    return made[kind, every]


@contextmanager
def _filled(url: str, every: int) -> Iterator[tuple[SQLKeyStore, Any, str]]:
    ks = KeySentry(url, usage_interval=None)
    ks.create_rate_limit_scheme("std", "Std", [{"unit": "minute", "max_requests": 10}])
    ks.create_api_auth_app(app_slug="api", name="A", key_prefix="sk_live",
                           rate_limit_scheme_slug="std")  # fmt: skip
    keys = [ks.create_api_key("api", f"k{i}", owner_user_id=f"user_{i % 20}") for i in range(KEYS)]
    for issued in keys[::every] if every else []:
        ks.rotate_api_key(issued.key.id, grace_seconds=3600)
    store = ks.store
    assert isinstance(store, SQLKeyStore)
    with store.engine.begin() as conn:
        name = conn.dialect.name
        if name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
        elif name == "postgresql":
            conn.exec_driver_sql("ANALYZE keysentry_keys")
        else:
            conn.exec_driver_sql("ANALYZE TABLE keysentry_keys")
    try:
        yield store, keys[1].key, ks.get_api_auth_app("api").id
    finally:
        ks.close()


def plan(store: SQLKeyStore, statement: Any) -> list[str]:
    """The database's plan for *statement* (its parameters bound), one string per row."""
    with store.engine.connect() as conn:
        name = conn.dialect.name
        sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all()
            return [str(row[-1]) for row in rows]
        if name == "postgresql":
            # without the option a tiny table is always read whole; with it, a query no
            # index can serve still shows a Seq Scan (at an enormous cost)
            conn.exec_driver_sql("SET enable_seqscan = off")
            return [str(row[0]) for row in conn.exec_driver_sql("EXPLAIN " + sql).all()]
        result = conn.exec_driver_sql("EXPLAIN " + sql)
        columns = list(result.keys())
        return [str(dict(zip(columns, row, strict=True))) for row in result.all()]


def bound(statement: Any, **values: Any) -> Any:
    """*statement* with its parameters' values."""
    return statement.params(**values)


def assert_indexed(store: SQLKeyStore, lines: list[str], table: str) -> None:
    text = "\n".join(lines)
    name = store.engine.dialect.name
    if name == "sqlite":
        assert f"SCAN {table}" not in text, text
        assert table in text, text
    elif name == "postgresql":
        assert f"Seq Scan on {table}" not in text, text
    else:
        rows = [line for line in lines if f"'table': '{table}'" in line]
        assert rows, text
        assert all("'type': 'ALL'" not in row for row in rows), text


def test_the_candidate_lookup_searches_by_prefix_and_suffix(filled: Any) -> None:
    # an index search on key_prefix alone would read every key of the app
    store, key, _ = filled
    lines = plan(store, bound(FIND_CANDIDATES, prefix="sk_live", suffix=key.key_suffix))
    assert_indexed(store, lines, "keysentry_keys")
    text = "\n".join(lines)
    name = store.engine.dialect.name
    if name == "sqlite":
        assert "SCAN keysentry_keys" not in text, text
        assert "(key_prefix=? AND key_suffix=?)" in text, text
        assert "(key_prefix=? AND previous_key_suffix=?)" in text, text
    elif name == "postgresql":
        conditions = [line for line in lines if "Index Cond" in line]
        assert len(conditions) == 2, text
        assert any("(key_suffix)::text =" in line for line in conditions), text
        assert any("(previous_key_suffix)::text =" in line for line in conditions), text
    else:
        searches = [line for line in lines if "'table': 'keysentry_keys'" in line]
        assert len(searches) == 2, text
        assert all("'ref': 'const,const'" in line for line in searches), text


@pytest.mark.parametrize(
    ("statement", "table", "params"),
    [
        (GET_KEY, "keysentry_keys", lambda key, app: {"key_id": key.id}),
        (GET_APP_BY_ID, "keysentry_apps", lambda key, app: {"app_id": app}),
        (GET_SCHEME, "keysentry_schemes", lambda key, app: {"slug": "std"}),
        (EVENTS_AFTER, "keysentry_events", lambda key, app: {"seq": 10, "limit": 1000}),
    ],
    ids=["key", "app", "scheme", "events"],
)
def test_the_other_verification_reads_use_an_index(
    filled: Any, statement: Any, table: str, params: Any
) -> None:
    store, key, app_id = filled
    assert_indexed(store, plan(store, bound(statement, **params(key, app_id))), table)


def test_one_owners_keys_are_read_by_the_owner_index(filled: Any) -> None:
    # the portal lists its customer's keys on every page: not by reading the app's every key
    store, _, app_id = filled
    lines = plan(store, bound(OWNER_KEYS, app_id=app_id, owner_user_id="user_3"))
    assert_indexed(store, lines, "keysentry_keys")
    assert "keysentry_keys_owner" in "\n".join(lines), lines
