"""`keysentry demo`, run as a new user runs it: the checked tour, and the printed curl lines."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from keysentry.server import free_port


def test_demo_check_plays_the_whole_tour(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keysentry", "demo", "--check"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    steps = [line for line in lines if line.startswith(("  ok", "  FAIL"))]
    assert len(steps) == 17  # the web extra is a test dependency: the pages' steps too
    assert all(step.startswith("  ok") for step in steps)
    for promised in ("without a key: 401", "(5/minute): 429", "revoked key, right after: 403",
                     "old secret: 401", "new secret: 200", "(GET /dashboard/login): 200",
                     "(GET /portal/t/…): 200", "(POST /portal/t/…): 200",
                     "the same link, sent again: 403"):  # fmt: skip
        assert any(promised in step for step in steps), promised
    assert lines[-1] == "all steps behaved"
    assert list(tmp_path.iterdir()) == []  # nothing left behind in the working directory


def test_demo_prints_curl_lines_that_work(tmp_path: Path) -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "keysentry", "demo", "--port", str(port)],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path,
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            printed = []
            for line in process.stdout:
                printed.append(line)
                if line.startswith("Or run"):
                    break
            curls = [line.split("#") for line in printed if line.strip().startswith("curl -i")]
            assert len(curls) == 3
            statuses, promised = [], []
            for command, comment in curls:
                promised.append(int(comment.split()[0].rstrip(":")))
                output = subprocess.run(shlex.split(command), capture_output=True, text=True,
                                        timeout=10).stdout  # fmt: skip
                match = re.match(r"HTTP/1.1 (\d{3})", output)
                assert match, output
                statuses.append(int(match.group(1)))
            assert statuses == promised == [200, 401, 403]  # as the comments next to them say
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
    assert process.returncode == 0
