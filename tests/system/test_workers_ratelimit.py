"""Rate limits stay exact across uvicorn workers (issues 4 and 5): 4 workers on PostgreSQL
share one Redis; 32 client threads keep them busy for several windows of a 50-per-second
``per_app`` rule. Every window admits at most 50, and the windows kept busy from start to end
admit exactly 50, all workers together."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keysentry import KeySentry, RateLimitRule
from tests.conftest import REDIS_URL, require_redis
from tests.system.test_processes import uvicorn

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
LIMIT = 50


def test_four_workers_admit_exactly_the_limit_per_window(tmp_path: Path, pg_url: str) -> None:
    require_redis()
    slug = f"api-{secrets.token_hex(4)}"  # counters are per app: none left by an earlier run
    with KeySentry(pg_url) as ks:
        rule = RateLimitRule(unit="second", max_requests=LIMIT, mode="per_app")
        ks.create_rate_limit_scheme("fifty", "Fifty", [rule])
        ks.create_api_auth_app(slug, "API", "sk_live", rate_limit_scheme_slug="fifty")
        secret = ks.create_api_key(slug, "k").secret
    env = {
        "KEYSENTRY_DATABASE_URL": pg_url,
        "KEYSENTRY_LIMITER_URL": REDIS_URL,
        "TEST_RATE_LIMIT_ALGORITHM": "fixed_window",  # a busy window admits exactly LIMIT
        # 32 clients and 4 workers on 2 cores can keep a connect past the default 100 ms,
        # and the limiter would then admit without counting (on_limiter_error="open"):
        # exactness is what this test is about, not the timeout
        "TEST_LIMITER_TIMEOUT": "2",
    }
    admitted: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    pids: set[str] = set()
    with uvicorn(tmp_path, env, workers=4) as port:
        deadline = time.monotonic() + 4.5

        def client() -> None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/whoami", headers={"Authorization": f"Bearer {secret}"}
            )
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        body = json.load(response)
                        statuses[response.status] += 1
                        pids.add(str(body["pid"]))
                        # windows end on whole seconds: round away the clock's few ms;
                        # no window: admitted without the limiter (it failed), counted apart
                        end = body.get("window_end_ms")
                        admitted[round(end / 1000) if end is not None else -1] += 1
                except urllib.error.HTTPError as exc:
                    statuses[exc.code] += 1
                    exc.read()

        with ThreadPoolExecutor(32) as pool:
            for future in [pool.submit(client) for _ in range(32)]:
                future.result()
    windows = sorted(admitted)
    print(f"\n  4 workers, {LIMIT}/s: admitted per window {[admitted[w] for w in windows]}, "
          f"statuses {dict(statuses)}, {len(pids)} workers answered")  # fmt: skip
    assert -1 not in admitted, "some requests were admitted without the Redis limiter"
    assert set(statuses) <= {200, 429}
    assert statuses[429] > statuses[200]  # the clients really pushed past the limit
    assert len(pids) >= 3
    assert max(admitted.values()) == LIMIT, admitted  # never LIMIT + 1
    full = windows[1:-1]  # the first and last windows were only partly busy
    assert len(full) >= 2, admitted
    assert [admitted[w] for w in full] == [LIMIT] * len(full), admitted
