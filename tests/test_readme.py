"""The README's quick start must run as written, and examples/quickstart.py must be it."""

from __future__ import annotations

import itertools
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"## Quick start\n\n```python\n(.*?)```", readme, re.S)
    assert match, "README.md lost its quick start block"
    return match.group(1)


def test_examples_quickstart_is_the_readme_block() -> None:
    assert quickstart() in (ROOT / "examples" / "quickstart.py").read_text()


def test_readme_quick_start_runs_twice_in_a_fresh_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # re-runnable: it cleans up after itself
        exec(compile(quickstart(), "README.md", "exec"), {"__name__": "__main__"})  # noqa: S102
        out = capsys.readouterr().out
        assert "secret, shown once: sk_live_" in out
        assert "refused: permissions: 'admin' is not granted" in out
        assert "revoked at: 20" in out
    assert (tmp_path / "keysentry.db").exists()


@pytest.mark.system  # starts processes
def test_readme_cli_lines_parse() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## The CLI\n\n```sh\n(.*?)```", readme, re.S)
    assert block
    text = block.group(1).replace("\\\n", " ")
    commands = [line for line in text.splitlines() if line.startswith("keysentry ")]
    assert len(commands) >= 6
    for line in commands:
        if "|" in line:
            continue  # a synopsis of several commands, not runnable as written
        words = line.split()[1:]
        path = list(itertools.takewhile(lambda w: re.fullmatch(r"[a-z][a-z-]*", w), words))[:2]
        help_run = subprocess.run(
            [sys.executable, "-m", "keysentry", *path, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert help_run.returncode == 0, line


def test_runpy_example_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    refused = [line for line in out.splitlines() if line.startswith("refused:")]
    assert refused == [
        "refused: permissions: 'admin' is not granted by app 'internal-api', which grants "
        "only ['users:read', 'users:write']"
    ]


def readme_block(heading: str) -> str:
    """The first python block after the bold *heading* in README.md."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(heading)
    match = re.search(r"```python\n(.*?)```", readme[start:], re.S)
    assert match, heading
    return match.group(1)


def setup_commands() -> str:
    """The README's shell block that makes the app and key the examples use."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("The examples below need an app and a key")
    match = re.search(r"```sh\n(.*?)```", readme[start:], re.S)
    assert match, "README.md lost the examples' setup block"
    return match.group(1)


def run_block(heading: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:  # type: ignore[type-arg]
    """Run the README's setup commands in a fresh directory, as a reader would, then
    execute the README block there as a module would be."""
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("KEYSENTRY_DATABASE_URL", None)
    shell = subprocess.run(
        ["bash", "-ec", setup_commands() + 'echo "KEY=$KEY"'],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert shell.returncode == 0, shell.stdout + shell.stderr
    namespace: dict = {"__name__": "readme_example"}  # type: ignore[type-arg]
    exec(compile(readme_block(heading), "README.md", "exec"), namespace)  # noqa: S102
    namespace["secret"] = shell.stdout.strip().splitlines()[-1].removeprefix("KEY=")
    assert namespace["secret"].startswith("sk_live_")
    return namespace


@pytest.mark.system  # starts processes
def test_readme_fastapi_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    ns = run_block("**FastAPI**", tmp_path, monkeypatch)
    auth = {"Authorization": f"Bearer {ns['secret']}"}
    with TestClient(ns["app"]) as client:
        assert client.get("/health").json() == {"ok": True}
        ok = client.get("/users/42", headers=auth).json()
        assert ok["user_id"] == 42
        assert ok["app"] == "internal-api"
        assert client.get("/users/42").status_code == 401
        assert client.post("/users/42", headers=auth).status_code == 403
        assert "ApiKey" in client.get("/openapi.json").json()["components"]["securitySchemes"]
    ns["ks"].close()


@pytest.mark.system  # starts processes
def test_readme_flask_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from werkzeug.test import Client

    ns = run_block("**Flask**", tmp_path, monkeypatch)
    client = Client(ns["app"])
    ok = client.get("/users/42", headers={"Authorization": f"Bearer {ns['secret']}"})
    assert ok.status_code == 200
    assert ok.json["user_id"] == 42  # type: ignore[index]
    assert client.get("/users/42").status_code == 401
    ns["ks"].close()


@pytest.mark.system  # starts processes
def test_readme_decorator_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    ns = run_block("**One handler, no middleware**", tmp_path, monkeypatch)
    with TestClient(ns["app"]) as client:
        auth = {"Authorization": f"Bearer {ns['secret']}"}
        me = client.get("/users/me", headers=auth)
        assert me.status_code == 200, me.text
        assert me.json()["permissions"] == ["users:read"]
        assert client.get("/users/me").json()["errors"][0]["reason"] == "missing_key"
    ns["ks"].close()


def test_readme_rate_limit_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keysentry import KeySentry, RateLimitRule

    ks = KeySentry("memory://")
    ks.create_api_auth_app(app_slug="internal-api", name="Internal API", key_prefix="sk_live")
    block = readme_block("## Rate limits")
    exec(compile(block, "README.md", "exec"), {"ks": ks, "RateLimitRule": RateLimitRule})  # noqa: S102
    app = ks.get_api_auth_app("internal-api")
    assert [r.short for r in app.rate_limits] == [
        "100/minute:per_key", "20/10second:per_key@POST /users/*", "10000/hour:per_app",
    ]  # fmt: skip


@pytest.mark.redis
def test_readme_redis_example(redis_prefix: str) -> None:
    from starlette.applications import Starlette

    from keysentry import KeySentry
    from keysentry.asgi import KeySentryMiddleware

    block = readme_block("### On Redis")
    assert 'limiter_url="redis://127.0.0.1:6379/0"' in block
    # the block as written, on an in-memory store instead of the example's database host
    namespace: dict = {"KeySentry": KeySentry}  # type: ignore[type-arg]
    exec(compile(block.replace("postgresql://db/keysentry", "memory://"), "README.md", "exec"),  # noqa: S102
         namespace)  # fmt: skip
    ks = namespace["ks"]
    ks.limiter._prefix = redis_prefix  # this test's own counters, deleted afterwards
    ks.create_rate_limit_scheme("two", "Two", [{"unit": "hour", "max_requests": 2}])
    ks.create_api_auth_app(app_slug="api", name="API", key_prefix="sk_live",
                           rate_limit_scheme_slug="two")  # fmt: skip
    secret = ks.create_api_key("api", "k").secret
    assert [ks.verify(secret).status for _ in range(3)] == [200, 200, 429]
    assert ks.limiter.available
    ks.close()

    proxies = readme_block("**Behind a proxy**")
    app = Starlette()
    names = {"app": app, "ks": KeySentry("memory://"), "KeySentryMiddleware": KeySentryMiddleware}
    exec(compile(proxies, "README.md", "exec"), names)  # noqa: S102
    assert app.user_middleware[0].kwargs["trusted_proxies"] == ["10.0.0.0/8"]


def test_front_door_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Try it, or test it\n\nFrom a clone.*?```sh\n(.*?)```", readme, re.S)
    assert block
    commands = [line for line in block.group(1).splitlines() if line.startswith("python3")]
    assert len(commands) == 2
    demo, tests = commands
    # the first runs the checked demo tour (tests/system/test_demo.py runs it as a subprocess)
    assert demo.endswith("pip install -e '.[serve]' && keysentry demo --check")
    # the second is exactly what CI runs after making its venv
    assert tests.endswith("&& pip install -e '.[dev]' && pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npip install -e '.[dev]' && pytest\n" in ci


def test_readme_resource_template_block() -> None:
    # the README's snippet, run against an app it names: the middleware's templates decide
    # the resource before the router runs
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from keysentry import KeySentry
    from keysentry.asgi import KeySentryMiddleware

    async def orders(request: object) -> PlainTextResponse:
        return PlainTextResponse("orders")

    ks = KeySentry("memory://")
    ks.create_api_auth_app("internal-api", "Internal API", "sk_live", resources=["users/42"])
    secret = ks.create_api_key("internal-api", "k").secret
    app = Starlette(routes=[Route("/v1/users/{user_id}/orders", orders)])
    namespace = {"app": app, "ks": ks, "KeySentryMiddleware": KeySentryMiddleware}
    block = readme_block("The **resource** checked")
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    auth = {"Authorization": f"Bearer {secret}"}
    with TestClient(app) as client:
        assert client.get("/v1/users/42/orders", headers=auth).text == "orders"
        denied = client.get("/v1/users/43/orders", headers=auth)
        assert denied.json()["errors"][0]["reason"] == "resource_denied"


def portal_example() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"## Dashboard and customer portal\n.*?```python\n(.*?)```", readme, re.S)
    assert match, "README.md lost its dashboard block"
    return match.group(1)


def test_the_portal_example_is_the_readme_block_and_sends_a_customer_to_their_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from starlette.testclient import TestClient

    source = (ROOT / "examples" / "portal_app.py").read_text()
    assert portal_example() in source
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(ROOT / "examples" / "portal_app.py"))
    assert "admin key for /dashboard/: ks_admin_" in capsys.readouterr().out
    with TestClient(namespace["app"]) as client:
        page = client.get("/account/api-keys")  # -> the link's page
        assert page.status_code == 200
        assert "data-autosubmit" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        page = client.post(page.url, data={"csrf": csrf.group(1)})  # its Continue -> the portal
        assert page.status_code == 200
        assert "<h1>Your API keys</h1>" in page.text
        assert "Create the key" in page.text
        assert client.get("/dashboard/", follow_redirects=False).status_code == 303
    namespace["ks"].close()


def test_selling_by_usage_is_the_readme_block_and_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"## Selling by usage\n.*?```python\n(.*?)```", readme, re.S)
    assert match, "README.md lost its selling-by-usage block"
    assert match.group(1) in (ROOT / "examples" / "selling_by_usage.py").read_text()
    runpy.run_path(str(ROOT / "examples" / "selling_by_usage.py"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "200 0"
    assert lines[1] == "429 usage_exceeded"
    assert lines[2].startswith("retry after ")
    assert lines[3] == "499"
