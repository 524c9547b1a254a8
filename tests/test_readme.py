"""The README's quick start must run as written, and examples/quickstart.py must be it."""

from __future__ import annotations

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


def test_readme_cli_lines_parse() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## The CLI\n\n```sh\n(.*?)```", readme, re.S)
    assert block
    text = block.group(1).replace("\\\n", " ")
    commands = [line for line in text.splitlines() if line.startswith("keysentry ")]
    assert len(commands) >= 6
    for line in commands:
        if "|" in line or "KEY_ID" in line:
            continue  # synopsis lines, not runnable as written
        help_run = subprocess.run(
            [sys.executable, "-m", "keysentry", *line.split()[1:3], "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert help_run.returncode == 0, line


def test_runpy_example_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
