"""What only the SQL store promises: WAL, the schema version, serialized writers, no secrets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from keysentry import ConflictError, KeySentry, StoreError
from keysentry.stores.sql import SQLKeyStore


@pytest.fixture
def sentries(sql_url: str) -> Iterator[list[KeySentry]]:
    """Eight independent KeySentry objects (own engines, own connections) on one database."""
    first = KeySentry(sql_url)
    first.list_api_auth_apps()  # create the schema once, before the race
    group = [first] + [KeySentry(sql_url) for _ in range(7)]
    yield group
    for ks in group:
        ks.close()


def race(targets: list[object]) -> list[object]:
    results: list[object] = [None] * len(targets)
    barrier = threading.Barrier(len(targets))

    def run(i: int, fn: object) -> None:
        barrier.wait()
        try:
            results[i] = fn()  # type: ignore[operator]
        except Exception as exc:  # the test inspects what each one got
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_racing_creates_of_one_slug_give_one_app_and_clean_conflicts(
    sentries: list[KeySentry],
) -> None:
    results = race(
        [
            lambda ks=ks: ks.create_api_auth_app(app_slug="same", name="S", key_prefix="sk_s")
            for ks in sentries
        ]
    )
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(results) - len(errors) == 1
    assert all(isinstance(e, ConflictError) for e in errors), errors
    assert [e.kind for e in sentries[0].list_events()] == ["app.created"]


def test_concurrent_writers_leave_a_gapless_event_log(sentries: list[KeySentry]) -> None:
    sentries[0].create_api_auth_app(app_slug="api", name="A", key_prefix="sk_a")

    def issue_five(ks: KeySentry) -> list[str]:
        return [ks.create_api_key("api", f"k{i}").key.id for i in range(5)]

    results = race([lambda ks=ks: issue_five(ks) for ks in sentries])
    assert not [r for r in results if isinstance(r, Exception)], results
    events = sentries[0].list_events(limit=1000)
    assert [e.seq for e in events] == list(range(1, 42))
    assert len(sentries[0].list_api_keys("api")) == 40


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = SQLKeyStore(f"sqlite:///{tmp_path}/wal.db")
    with store.read(), store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


def test_a_database_of_another_schema_version_is_refused(sql_url: str) -> None:
    with KeySentry(sql_url) as ks:
        ks.list_api_auth_apps()
        store = ks.store
        assert isinstance(store, SQLKeyStore)
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE keysentry_meta SET value = '99'"))
    with KeySentry(sql_url) as ks, pytest.raises(StoreError, match="version 99"):
        ks.list_api_auth_apps()


def test_a_version_1_database_is_upgraded_and_keeps_its_keys(sql_url: str) -> None:
    with KeySentry(sql_url) as ks:
        ks.create_api_auth_app("old", "Old", "sk_old")
        issued = ks.create_api_key("old", "from version 1")
        store = ks.store
        assert isinstance(store, SQLKeyStore)
        with store.engine.begin() as conn:  # what version 1 had
            for table, column in [("keysentry_apps", "allowed_ips"),
                                  ("keysentry_keys", "allowed_ips"), ("keysentry_keys", "credits"),
                                  ("keysentry_keys", "refill"),
                                  ("keysentry_keys", "credit_period"),
                                  ("keysentry_keys", "credit_generation")]:  # fmt: skip
                conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
            conn.execute(sa.text("UPDATE keysentry_meta SET value = '1' "
                                 "WHERE name = 'schema_version'"))  # fmt: skip
    with KeySentry(sql_url) as ks:
        assert ks.verify(issued.secret).allowed
        assert ks.get_api_key(issued.key.id).allowed_ips == []
        ks.update_api_auth_app("old", allowed_ips=["10.0.0.0/8"])
        assert ks.get_api_auth_app("old").allowed_ips == ["10.0.0.0/8"]
        store = ks.store
        assert isinstance(store, SQLKeyStore)
        with store.engine.connect() as conn:
            version = conn.execute(sa.text("SELECT value FROM keysentry_meta "
                                           "WHERE name = 'schema_version'")).scalar()  # fmt: skip
        assert version == "2"


def test_a_database_made_before_the_owner_index_gets_it(sql_url: str) -> None:
    def owner_index(store: object) -> bool:
        assert isinstance(store, SQLKeyStore)
        with store.engine.connect() as conn:
            indexes = sa.inspect(conn).get_indexes("keysentry_keys")
        return any(i["name"] == "keysentry_keys_owner" for i in indexes)

    with KeySentry(sql_url) as ks:
        ks.create_api_auth_app("old", "Old", "sk_old")
        issued = ks.create_api_key("old", "theirs", owner_user_id="alice")
        assert owner_index(ks.store)
        store = ks.store
        assert isinstance(store, SQLKeyStore)
        with store.engine.begin() as conn:
            drop = "DROP INDEX keysentry_keys_owner"
            if conn.dialect.name in ("mysql", "mariadb"):
                drop += " ON keysentry_keys"
            conn.execute(sa.text(drop))
        assert not owner_index(store)
    with KeySentry(sql_url) as ks:
        assert [k.id for k in ks.list_api_keys("old", owner_user_id="alice")] == [issued.key.id]
        assert owner_index(ks.store)


def test_the_secret_is_in_no_row_of_any_table(sql_url: str) -> None:
    with KeySentry(sql_url) as ks:
        ks.create_api_auth_app(app_slug="api", name="A", key_prefix="sk_live")
        first = ks.create_api_key("api", "k", metadata={"note": "x"})
        second = ks.rotate_api_key(first.key.id, grace_seconds=60)
        store = ks.store
        assert isinstance(store, SQLKeyStore)
        dump = []
        with store.engine.connect() as conn:
            for table in (
                "keysentry_apps",
                "keysentry_keys",
                "keysentry_events",
                "keysentry_schemes",
                "keysentry_meta",
            ):
                dump += [str(tuple(row)) for row in conn.execute(sa.text(f"SELECT * FROM {table}"))]  # noqa: S608
    text = "\n".join(dump)
    for secret in (first.secret, second.secret):
        assert secret not in text
        assert secret[len("sk_live_") : -6] not in text  # nor its random part
    assert first.key.key_suffix in text  # the lookup columns are there, as designed


def test_store_errors_carry_no_sql_parameters() -> None:
    ks = KeySentry("postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(StoreError) as info:
        ks.get_api_key("key_x")
    assert "[parameters" not in str(info.value)
    assert "OperationalError" in str(info.value)
    assert info.value.__cause__ is not None


def test_racing_first_starts_on_an_empty_database_all_succeed(sql_url: str) -> None:
    # eight processes' worth of engines creating the schema at once (MySQL commits DDL at
    # once, so there a named lock keeps them apart)
    group = [KeySentry(sql_url) for _ in range(8)]
    try:
        results = race([ks.list_api_auth_apps for ks in group])
        assert results == [[]] * 8, results
        group[0].create_api_auth_app(app_slug="after", name="A", key_prefix="sk_a")
        assert [a.app_slug for a in group[-1].list_api_auth_apps()] == ["after"]
    finally:
        for ks in group:
            ks.close()


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@127.0.0.1:1/test", "mysql://root@127.0.0.1:1/test"],
    ids=["postgres", "mysql"],
)
def test_an_unreachable_store_is_a_503_and_a_clean_store_error(url: str) -> None:
    from keysentry.core.keys import generate_key

    ks = KeySentry(url)  # nothing listens on port 1
    verdict = ks.verify(generate_key("sk_live").secret)
    assert (verdict.status, verdict.reason.value) == (503, "unavailable")
    with pytest.raises(StoreError) as info:
        ks.get_api_key("key_x")
    assert "[parameters" not in str(info.value)
    assert "OperationalError" in str(info.value)
    ks.close()


def test_mysql_datetimes_keep_microseconds_and_utc(mysql_url: str) -> None:
    from datetime import UTC, datetime

    expires = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with KeySentry(mysql_url) as ks:
        ks.create_api_auth_app(app_slug="api", name="A", key_prefix="sk_live")
        issued = ks.create_api_key("api", "k", expires_at=expires)
        assert ks.get_api_key(issued.key.id).expires_at == expires


def test_mysql_compares_suffixes_and_ids_case_sensitively(mysql_url: str) -> None:
    from keysentry import NotFoundError

    with KeySentry(mysql_url) as ks:
        ks.create_api_auth_app(app_slug="api", name="A", key_prefix="sk_live")
        issued = ks.create_api_key("api", "k")
        while issued.key.key_suffix.swapcase() == issued.key.key_suffix:  # digits only
            issued = ks.create_api_key("api", "k")
        store = ks.store
        assert isinstance(store, SQLKeyStore)
        suffix = issued.key.key_suffix
        assert [k.id for k in store.find_keys("sk_live", suffix)] == [issued.key.id]
        assert store.find_keys("sk_live", suffix.swapcase()) == []
        other_case = issued.key.id[:4] + issued.key.id[4:].swapcase()
        assert other_case != issued.key.id
        with pytest.raises(NotFoundError):
            ks.get_api_key(other_case)
