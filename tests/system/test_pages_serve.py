"""The pages under ``keysentry serve --workers 3``: a sign-in made on one worker holds on
every other (the cookie key is the store's shared secret, not each process's own), and a
portal link is spent once whichever worker receives it."""

from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from keysentry import KeySentry
from keysentry.admin import create_admin_key
from keysentry.server import free_port
from tests.system.test_serve import wait_until_serving

WORKERS = 3


def _status(opener: urllib.request.OpenerDirector, url: str, data: bytes | None = None) -> int:
    try:
        with opener.open(url, data, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_sessions_and_links_hold_across_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/pages.db"
    with KeySentry(url) as ks:
        admin = create_admin_key(ks).secret
        ks.create_api_auth_app("shop", "Shop", "sk_shop")
        links = [ks.create_portal_session("shop", f"user_{i}").url for i in range(3)]
    env = {**os.environ, "KEYSENTRY_DATABASE_URL": url}
    env.pop("KEYSENTRY_SECRET_KEY", None)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keysentry", "serve", "--port", str(port), "--workers",
         str(WORKERS), "--log-level", "warning", "--no-metrics"], env=env, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, process)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(base + "/dashboard/login", timeout=30) as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.read().decode())
        assert csrf is not None
        form = urllib.parse.urlencode({"csrf": csrf.group(1), "api_key": admin}).encode()
        assert _status(opener, base + "/dashboard/login", form) == 200  # after the redirect
        # each request on a new connection: uvicorn's workers share the socket, so they
        # land on different processes; every one must read the same cookie
        assert [_status(opener, base + "/dashboard/apps/shop") for _ in range(30)] == [200] * 30

        # a link spent once, however many workers its Continue form reaches at the same time
        def open_link(target: str) -> int:  # a browser of its own, cookies and all
            own = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
            with own.open(target, timeout=30) as page:  # the link's page spends nothing
                token = re.search(r'name="csrf" value="([^"]+)"', page.read().decode())
            assert token is not None
            return _status(own, target, urllib.parse.urlencode({"csrf": token.group(1)}).encode())

        for link in links:
            with ThreadPoolExecutor(6) as pool:
                statuses = list(pool.map(open_link, [base + link] * 6))
            assert sorted(statuses) == [200] + [403] * 5
    finally:
        process.terminate()
        assert process.wait(60) == 0


def test_the_access_log_never_shows_a_links_token(tmp_path: Path) -> None:
    # the link's page is fetched, and logged, before its form spends the link
    url = f"sqlite:///{tmp_path}/log.db"
    with KeySentry(url) as ks:
        ks.create_api_auth_app("shop", "Shop", "sk_shop")
        link = ks.create_portal_session("shop", "alice").url
    token = link.rsplit("/", 1)[1]
    env = {**os.environ, "KEYSENTRY_DATABASE_URL": url}
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keysentry", "serve", "--port", str(port), "--workers", "2",
             "--log-level", "info", "--no-metrics"], env=env, cwd=tmp_path, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(base, process)
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
            for path in (link, link + "?utm=mail"):  # each worker may answer one
                for _ in range(3):
                    assert _status(opener, base + path) == 200
        finally:
            process.terminate()
            assert process.wait(60) == 0
    written = log.read_text()
    assert "/portal/t/…" in written, written
    assert token not in written, written
