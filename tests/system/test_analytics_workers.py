"""Usage analytics under a real server: ``keysentry serve --workers 4`` on PostgreSQL, loaded
from many threads; after a clean shutdown the stored counts equal the requests sent, by
outcome, exactly; and ``/metrics`` adds up every worker's counters (prometheus_client's
multiprocess mode)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from keysentry import KeySentry
from keysentry.admin import create_admin_key
from keysentry.server import free_port
from tests.system.http import http_status
from tests.system.test_serve import wait_until_serving

pytestmark = pytest.mark.postgres
WORKERS = 4


def _check(base: str, admin: str, secret: str, permissions: list[str]) -> int:
    body = {"principal": {"type": "api_key", "value": secret},
            "required_permissions": permissions}  # fmt: skip
    request = urllib.request.Request(
        base + "/v1/authz/check", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
    )  # fmt: skip
    return http_status(request)


def _scrape(base: str, admin: str) -> str:
    request = urllib.request.Request(
        base + "/metrics", headers={"Authorization": f"Bearer {admin}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


def _sample(text: str, app: str, outcome: str) -> float:
    pattern = (
        r'^keysentry_verifications_total\{app="' + re.escape(app) + r'",outcome="'
        + re.escape(outcome) + r'"\} ([0-9.e+]+)$'
    )  # fmt: skip
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_counts_stored_equal_requests_sent(pg_url: str, tmp_path: Path) -> None:
    with KeySentry(pg_url) as ks:
        admin = create_admin_key(ks).secret
        ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["orders:read"])
        good = ks.create_api_key("shop", "good").secret
        revoked = ks.create_api_key("shop", "revoked")
        ks.revoke_api_key(revoked.key.id)
    # (secret, permissions) -> how many requests, and the outcome each must get
    plan: list[tuple[str, list[str], str, int]] = [
        (good, [], "ok", 400),
        (good, ["orders:write"], "permission_denied", 150),
        (revoked.secret, [], "key_revoked", 100),
        (good[:-8] + "AbCdEfGh", [], "invalid_key", 50),  # bad checksum: no app, not stored
    ]
    env = {**os.environ, "KEYSENTRY_DATABASE_URL": pg_url}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keysentry", "serve", "--port", str(port), "--workers",
         str(WORKERS), "--log-level", "warning"], env=env, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, process)
        jobs = [(s, p) for s, p, _, n in plan for _ in range(n)]
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda job: _check(base, admin, *job), jobs))
        assert all(status == 200 for status in statuses)  # /v1/authz/check answers 200
        # every worker's counters, whichever worker answers the scrape; a worker publishes
        # its counts every second, so the last second's reach another worker's scrape late
        expected = {("shop", "ok"): 400.0, ("shop", "permission_denied"): 150.0,
                    ("shop", "key_revoked"): 100.0, ("", "invalid_key"): 50.0}  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            text = _scrape(base, admin)
            seen = {label: _sample(text, *label) for label in expected}
            assert all(seen[label] <= expected[label] for label in expected), seen
            if seen == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen == expected
        for _ in range(2 * WORKERS):
            text = _scrape(base, admin)
            assert {label: _sample(text, *label) for label in expected} == expected
    finally:
        process.terminate()
        assert process.wait(60) == 0
    with KeySentry(pg_url) as ks:
        counts: dict[str, int] = {}
        for point in ks.get_usage("shop", since=timedelta(hours=2), granularity="minute"):
            assert point.outcome is not None
            counts[point.outcome] = counts.get(point.outcome, 0) + point.count
        assert counts == {"ok": 400, "permission_denied": 150, "key_revoked": 100}
        by_day: dict[Any, int] = {}
        for point in ks.get_usage("shop", since=timedelta(days=2), granularity="day"):
            by_day[point.outcome] = by_day.get(point.outcome, 0) + point.count
        assert by_day == counts
