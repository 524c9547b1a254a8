"""The store stopped under a served app (docs/design.md §7): our own ``postgres`` (stopped
by its pid) or ``mariadbd`` (killed by its pid, SIGKILL) on a spare port, while uvicorn
serves requests. A key verified before keeps
verifying for at most ``max_stale``; a cache miss answers 503 with ``Retry-After`` within the
store timeout; nothing answers 500 and no unknown key gets a 200; exact service, revocation
included, resumes once the server is back."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysentry import KeySentry
from keysentry.core.keys import generate_key
from tests.own_services import OwnMariaDB, OwnPostgres
from tests.system.test_processes import uvicorn

MAX_STALE = 4.0
# the stores' connect_timeout and statement_timeout (PostgreSQL) / read_timeout (MySQL)
STORE_TIMEOUT = 5.0


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mariadb", marks=pytest.mark.mysql)])  # fmt: skip
def own_store(request: pytest.FixtureRequest) -> Iterator[OwnPostgres | OwnMariaDB]:
    server = OwnPostgres() if request.param == "postgres" else OwnMariaDB()
    server.start()
    yield server
    server.remove()


def get(port: int, secret: str | None) -> tuple[int, dict[str, str], float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/whoami")
    if secret is not None:
        request.add_header("Authorization", f"Bearer {secret}")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, headers = exc.code, dict(exc.headers)
    return status, {k.lower(): v for k, v in headers.items()}, time.monotonic() - started


def test_the_store_stopped_and_back_under_uvicorn(
    tmp_path: Path, own_store: OwnPostgres | OwnMariaDB
) -> None:
    own_postgres = own_store  # the same steps for either server
    with KeySentry(own_postgres.url) as ks:
        ks.create_api_auth_app("api", "API", "sk_live")
        known = ks.create_api_key("api", "known").secret  # verified before the outage
        unseen = ks.create_api_key("api", "unseen").secret  # first seen during it
        stranger = ks.create_api_key("api", "stranger")
        ks.revoke_api_key(stranger.key.id)
    unknown = generate_key("sk_live").secret  # well formed, checksum right, never issued
    statuses: Counter[int] = Counter()
    env = {
        "KEYSENTRY_DATABASE_URL": own_postgres.url,
        "TEST_CACHE_TTL": "1",  # so the outage outlives the fresh cache entry
        "TEST_MAX_STALE": str(MAX_STALE),
    }
    with uvicorn(tmp_path, env) as port:
        assert get(port, known)[0] == 200
        confirmed = time.monotonic()
        own_postgres.stop()

        time.sleep(1.2)  # past cache_ttl: from here on "known" is served stale
        miss_times = []
        while time.monotonic() - confirmed < MAX_STALE - 1.0:
            status, _, _ = get(port, known)
            statuses[status] += 1
            assert status == 200, "a key verified within max_stale keeps verifying"
            for secret in (unseen, unknown, stranger.secret):
                status, headers, took = get(port, secret)
                statuses[status] += 1
                assert status == 503, "a miss cannot be decided without the store"
                assert int(headers["retry-after"]) >= 1
                miss_times.append(took)
            time.sleep(0.2)
        # authentication that needs no store still works
        assert get(port, None)[0] == 401
        assert get(port, "sk_live_" + "0" * 38)[0] == 401  # bad checksum: no lookup at all

        time.sleep(max(0.0, confirmed + MAX_STALE + 0.5 - time.monotonic()))
        status, headers, _ = get(port, known)
        statuses[status] += 1
        assert status == 503, "past max_stale even a known key is refused"
        assert max(miss_times) <= STORE_TIMEOUT

        own_postgres.start()
        back = time.monotonic()
        while (status := get(port, unseen)[0]) != 200:
            statuses[status] += 1
            assert status == 503
            assert time.monotonic() - back < 5.0, "service did not resume"
            time.sleep(0.05)
        resumed = time.monotonic() - back
        assert get(port, known)[0] == 200
        assert get(port, unknown)[0] == 401
        assert get(port, stranger.secret)[0] == 403

        with KeySentry(own_postgres.url) as ks:  # revocation works again, from another process
            ks.revoke_api_key(ks.list_api_keys("api")[0].id)
        deadline = time.monotonic() + 1.0 + 1.0  # sync_interval plus a lookup
        while get(port, known)[0] == 200:
            assert time.monotonic() < deadline, "the revocation did not reach the server"
            time.sleep(0.05)
        assert get(port, known)[0] == 403

    assert 500 not in statuses
    print(
        f"\n  {type(own_store).__name__[3:].lower()} outage: misses answered 503 in at most "
        f"{max(miss_times) * 1000:.0f} ms; "
        f"service resumed {resumed * 1000:.0f} ms after the server came back; {dict(statuses)}"
    )
