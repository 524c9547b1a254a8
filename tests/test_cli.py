"""The CLI used as a new user would: main([...]) in-process, plus one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keysentry.cli import main


# Not memory://: every CLI call opens the store anew, as separate processes would.
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def run(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/cli.db"
    else:
        url = str(request.getfixturevalue("pg_url"))
    monkeypatch.setenv("KEYSENTRY_DATABASE_URL", url)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def create_key(run) -> dict:  # type: ignore[no-untyped-def]
    assert (
        run(
            "schemes",
            "create",
            "standard",
            "--name",
            "Standard",
            "--rule",
            "100/minute:per_key",
            "--rule",
            '{"unit": "hour", "max_requests": 1000, "mode": "per_app"}',
        )[0]
        == 0
    )
    code, out, _ = run(
        "apps",
        "create",
        "internal-api",
        "--name",
        "Internal API",
        "--key-prefix",
        "sk_live",
        "--permission",
        "users:*",
        "--resource",
        "users/*",
        "--scheme",
        "standard",
    )
    assert code == 0, out
    code, out, err = run(
        "keys",
        "create",
        "internal-api",
        "--name",
        "Primary",
        "--permission",
        "users:read",
        "--metadata",
        '{"owner": "billing"}',
        "--expires-at",
        "2031-01-01T00:00:00Z",
        "--json",
    )
    assert code == 0
    assert "shown only once" in err
    return json.loads(out)  # type: ignore[no-any-return]


def test_new_user_tour(run) -> None:  # type: ignore[no-untyped-def]
    issued = create_key(run)
    key, secret = issued["key"], issued["secret"]
    assert secret.startswith("sk_live_")
    assert key["key_suffix"] == secret[-4:]
    assert "key_hash" not in key
    assert [r["max_requests"] for r in key["rate_limits"]] == [100, 1000]

    code, out, _ = run("keys", "list", "internal-api")
    assert code == 0
    assert f"sk_live_…{key['key_suffix']}" in out
    assert "active" in out
    code, out, _ = run("keys", "create", "internal-api", "--name", "Alice's",
                       "--owner-user-id", "alice", "--json")  # fmt: skip
    alices = json.loads(out)["key"]["id"]
    code, out, _ = run("keys", "list", "internal-api", "--owner-user-id", "alice", "--json")
    assert code == 0
    assert [k["id"] for k in json.loads(out)] == [alices]
    code, out, _ = run("apps", "list", "--json")
    assert [a["app_slug"] for a in json.loads(out)] == ["internal-api"]
    code, out, _ = run("--json", "schemes", "show", "standard")
    assert [r["unit"] for r in json.loads(out)["rules"]] == ["minute", "hour"]

    code, out, _ = run("keys", "rotate", key["id"], "--json")
    rotated = json.loads(out)
    assert code == 0
    assert rotated["secret"] != secret
    assert rotated["key"]["id"] == key["id"]
    code, out, _ = run("keys", "revoke", key["id"], "--reason", "leaked")
    assert code == 0
    assert "revoked_reason:" in out
    assert "leaked" in out
    code, out, _ = run("keys", "show", key["id"])
    assert "revoked" in out
    code, out, _ = run("events", "list", "--json")
    assert [e["kind"] for e in json.loads(out)][-3:] == [
        "key.created",
        "key.rotated",
        "key.revoked",
    ]
    code, out, _ = run("apps", "update", "internal-api", "--inactive", "--no-scheme")
    assert code == 0
    assert "is_active:" in out
    code, out, _ = run("apps", "delete", "internal-api")
    assert code == 0
    assert run("apps", "list")[1].strip() == "(none)"


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        pytest.param(
            ["keys", "create", "internal-api", "--name", "x", "--permission", "admin"],
            1,
            "permissions: 'admin' is not granted",
            id="ungranted",
        ),
        pytest.param(
            ["keys", "create", "nope", "--name", "x"], 1, "app 'nope' not found", id="unknown-app"
        ),
        pytest.param(
            ["keys", "create", "internal-api", "--name", "x", "--metadata", "[1]"],
            2,
            "must be a JSON object",
            id="metadata-not-object",
        ),
        pytest.param(
            ["keys", "create", "internal-api", "--name", "x", "--metadata", "{"],
            2,
            "not valid JSON",
            id="metadata-bad-json",
        ),
        pytest.param(
            ["keys", "create", "internal-api", "--name", "x", "--expires-at", "2031-01-01"],
            1,
            "must include a timezone",
            id="naive-expiry",
        ),
        pytest.param(
            ["apps", "create", "Bad", "--name", "x", "--key-prefix", "sk"],
            1,
            "app_slug: 'Bad' is not valid",
            id="bad-slug",
        ),
        pytest.param(
            ["schemes", "create", "s2", "--name", "S", "--rule", "lots/minute"],
            2,
            "is not of the form",
            id="bad-rule",
        ),
        pytest.param(
            ["schemes", "create", "s2", "--name", "S", "--rule", "5/2month"],
            2,
            "duration: must be 1",
            id="rule-bound",
        ),
        pytest.param(
            ["schemes", "delete", "standard"],
            1,
            "still used by app 'internal-api'",
            id="scheme-in-use",
        ),
        pytest.param(
            ["keys", "rotate", "key_nope"], 1, "key 'key_nope' not found", id="rotate-unknown"
        ),
        pytest.param(["keys", "frobnicate"], 2, "invalid choice", id="unknown-command"),
        pytest.param(["apps"], 2, "required", id="missing-command"),
        pytest.param(
            ["--database-url", "oracle://x", "apps", "list"],
            1,
            "unsupported database URL",
            id="bad-url",
        ),
    ],
)
def test_mistakes_print_one_line_and_exit_non_zero(
    run,
    argv: list[str],
    code: int,
    fragment: str,  # type: ignore[no-untyped-def]
) -> None:
    create_key(run)
    got, out, err = run(*argv)
    assert got == code
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert out == ""


def test_unreachable_database_is_one_line() -> None:
    code = main(["--database-url", "postgresql://postgres@127.0.0.1:1/test", "apps", "list"])
    assert code == 1


def test_the_secret_appears_only_in_create_and_rotate_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "k.db"
    monkeypatch.setenv("KEYSENTRY_DATABASE_URL", f"sqlite:///{db}")
    outputs: list[str] = []

    def call(*argv: str) -> str:
        assert main(list(argv)) == 0
        out, err = capsys.readouterr()
        outputs.append(out + err)
        return out

    call("apps", "create", "api", "--name", "API", "--key-prefix", "sk_live")
    secret = json.loads(call("keys", "create", "api", "--name", "k", "--json"))["secret"]
    key_id = json.loads(outputs[-1].split("\nStore")[0])["key"]["id"]
    for argv in (
        ["keys", "list", "api"],
        ["keys", "show", key_id],
        ["keys", "list", "api", "--json"],
        ["events", "list"],
        ["apps", "show", "api"],
    ):
        call(*argv)
    rotated = json.loads(call("keys", "rotate", key_id, "--json", "--grace-seconds", "60"))
    call("keys", "revoke", key_id)
    call("keys", "show", key_id, "--json")
    for secret_text in (secret, rotated["secret"]):
        holders = [i for i, text in enumerate(outputs) if secret_text in text]
        assert len(holders) == 1  # only the create / rotate call that issued it
        for path in tmp_path.iterdir():  # the database, its WAL and shm files
            assert secret_text.encode() not in path.read_bytes()
            assert secret_text[8:].encode() not in path.read_bytes()


@pytest.mark.system  # starts processes
def test_console_script_runs_as_a_subprocess(tmp_path: Path) -> None:
    env = {"KEYSENTRY_DATABASE_URL": f"sqlite:///{tmp_path}/k.db", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keysentry",
            "apps",
            "create",
            "api",
            "--name",
            "API",
            "--key-prefix",
            "sk_x",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["app_slug"] == "api"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keysentry",
            "apps",
            "create",
            "api",
            "--name",
            "API",
            "--key-prefix",
            "sk_x",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == "keysentry: error: an app 'api' already exists\n"
