"""``last_used_at`` written behind (docs/design.md §7): never a write per request, batched, moved
only forward, written at close, kept for a retry when the store fails, and visible through
the management API, the admin HTTP API and the CLI."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keysentry import ConfigurationError, KeySentry, StoreError
from keysentry.cli import main as cli
from keysentry.stores.usage import UsageRecorder

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _world(url: str, **options: Any) -> tuple[KeySentry, str, str]:
    ks = KeySentry(url, **options)
    ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["orders:read"])
    issued = ks.create_api_key("shop", "k")
    return ks, issued.key.id, issued.secret


def test_record_usage_moves_forward_only_and_survives_revocation(database_url: str) -> None:
    ks, key_id, _ = _world(database_url, usage_interval=None)
    with ks:
        store = ks.store
        store.record_usage({key_id: T0, "key_unknown": T0})  # unknown ids are skipped
        assert ks.get_api_key(key_id).last_used_at == T0
        store.record_usage({key_id: T0 - timedelta(hours=1)})  # an older time loses
        assert ks.get_api_key(key_id).last_used_at == T0
        store.record_usage({key_id: T0 + timedelta(seconds=1)})
        later = T0 + timedelta(seconds=1)
        assert ks.get_api_key(key_id).last_used_at == later
        # a management write of the whole record (revocation) leaves the usage alone
        assert ks.revoke_api_key(key_id).last_used_at == later
        assert ks.get_api_key(key_id).last_used_at == later
        assert ks.list_events()[-1].kind == "key.revoked"  # and usage wrote no event


def record_statements(ks: KeySentry) -> list[str]:
    """Every SQL statement *ks*'s store sends from now on, in order."""
    statements: list[str] = []
    sa.event.listen(
        ks.store.engine,  # type: ignore[attr-defined]
        "before_cursor_execute",
        lambda _c, _cur, sql, *_: statements.append(sql),
    )
    return statements


def test_no_write_per_request_one_batch_per_flush(tmp_path: Any) -> None:
    ks, key_id, secret = _world(f"sqlite:///{tmp_path}/k.db", usage_interval=None)
    statements = record_statements(ks)
    with ks:
        for _ in range(1000):
            assert ks.verify(secret).allowed
        assert not [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
        assert ks.get_api_key(key_id).last_used_at is None  # nothing written yet
        assert ks.usage.pending() == 1
        assert ks.usage.flush() == 1
        updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
        assert len(updates) == 1  # one batched statement for the whole interval
        used = ks.get_api_key(key_id).last_used_at
        assert used is not None
        assert abs(used.timestamp() - time.time()) < 60
        assert ks.usage.flush() == 0  # nothing new since


def test_what_counts_as_a_use(database_url: str) -> None:
    ks, key_id, secret = _world(database_url, usage_interval=None)
    with ks:
        other = ks.create_api_key("shop", "other")
        assert ks.verify(secret, permissions="orders:write").status == 403  # matched: a use
        ks.usage.flush()
        assert ks.get_api_key(key_id).last_used_at is not None
        # a wrong secret is nobody's use; a revoked key's attempt is not a use either
        assert ks.verify(secret[:-4] + "AAAA").status == 401
        ks.revoke_api_key(other.key.id)
        assert ks.verify(other.secret).status == 403
        assert ks.usage.pending() == 0
        assert ks.get_api_key(other.key.id).last_used_at is None


@pytest.mark.postgres
def test_background_writer_on_postgres(pg_url: str) -> None:
    ks, key_id, secret = _world(pg_url, usage_interval=0.2)
    with ks:
        assert ks.verify(secret).allowed
        deadline = time.monotonic() + 10
        while ks.get_api_key(key_id).last_used_at is None:
            assert time.monotonic() < deadline, "the writer thread never wrote"
            time.sleep(0.05)
        assert ks.usage.writes >= 1


def test_close_writes_what_is_pending_and_another_process_sees_it(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    ks, key_id, secret = _world(url)  # default interval: 10 s, far longer than this test
    assert ks.verify(secret).allowed
    ks.close()  # application shutdown
    assert cli(["--database-url", url, "--json", "keys", "show", key_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["last_used_at"] is not None


class FailingStore:
    """A real store whose usage writes can be made to fail."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def record_usage(self, used: Any) -> None:
        if self.down:
            raise StoreError("postgresql store failed: connection refused")
        self.inner.record_usage(used)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failed_write_keeps_the_times_for_the_next(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ks, key_id, secret = _world(f"sqlite:///{tmp_path}/k.db", usage_interval=None)
    with ks:
        store = FailingStore(ks.store)
        recorder = UsageRecorder(store, interval=None)  # type: ignore[arg-type]
        store.down = True
        recorder.record(key_id, T0.timestamp())
        assert recorder.flush() == 0
        assert "could not write last_used_at for 1 keys (will retry)" in caplog.text
        assert secret not in caplog.text
        recorder.record(key_id, (T0 - timedelta(seconds=5)).timestamp())  # older, arrives late
        store.down = False
        assert recorder.flush() == 1
        assert ks.get_api_key(key_id).last_used_at == T0  # the later time won


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_its_own_uses_only(tmp_path: Any) -> None:
    ks, key_id, secret = _world(f"sqlite:///{tmp_path}/k.db", usage_interval=None)
    with ks:
        second = ks.create_api_key("shop", "second")
        assert ks.verify(secret).allowed  # the parent's use, pending in the parent
        pid = os.fork()
        if pid == 0:  # the child: a worker forked by a server
            code = 1
            try:
                child_ok = ks.usage.pending() == 0 and ks.verify(second.secret).allowed
                ks.usage.flush()
                code = 0 if child_ok else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert ks.get_api_key(second.key.id).last_used_at is not None  # the child wrote
        assert ks.get_api_key(key_id).last_used_at is None  # not the parent's use
        ks.usage.flush()
        assert ks.get_api_key(key_id).last_used_at is not None


@pytest.mark.parametrize("bad", [0, -1, True, "10"])
def test_usage_interval_is_checked(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="usage_interval"):
        KeySentry("memory://", usage_interval=bad)  # type: ignore[arg-type]


def test_uses_within_a_second_are_noted_once(tmp_path: Any) -> None:
    # precise to a second: a use within a second of the one noted is not noted again (no
    # lock taken), a later one is, and what is written is the latest noted
    ks, key_id, _ = _world(f"sqlite:///{tmp_path}/k.db", usage_interval=None)
    with ks:
        recorder = UsageRecorder(ks.store, interval=None)
        start = T0.timestamp()
        recorder.record(key_id, start)
        recorder.record(key_id, start + 0.9)  # within the second: skipped
        assert recorder.flush() == 1
        assert ks.get_api_key(key_id).last_used_at == T0
        recorder.record(key_id, start + 0.95)  # nothing pending now: noted
        recorder.record(key_id, start + 2.5)  # a second later: noted
        assert recorder.flush() == 1
        assert ks.get_api_key(key_id).last_used_at == T0 + timedelta(seconds=2.5)
