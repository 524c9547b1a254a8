"""The benchmark runner's outputs (issue 7): the table, JSON, Markdown and the chart are
written from the results and say the same thing. Timing is never asserted here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import run
from benchmarks.run import Result, compare


def test_compare_times_both_sides_and_reports_speed() -> None:
    calls = {"ours": 0, "base": 0}

    def ours() -> None:
        calls["ours"] += 1

    def base() -> None:
        calls["base"] += 1

    result = compare("s", ("o", ours), ("b", base), number=7, rounds=3, target=0.5)
    assert calls == {"ours": 21, "base": 21}
    assert result.speed == result.baseline_us / result.ours_us
    assert result.met == (result.speed >= 0.5)


def test_outputs_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = [
        Result("fast one", "ours", "theirs", 1.0, 4.0, 3.0, 2.0, target=2.0),
        Result("slow one", "ours", "bare", 10.0, 5.0, 1.0, 1.0, target=0.7),
        Result("no target", "ours", "floor", 2.0, 1.0, 1.0, 1.0),
    ]
    for module in ("keys", "asgi", "frameworks", "peers", "limiters", "stores"):
        monkeypatch.setattr(f"benchmarks.run.{module}.scenarios", lambda _c, _r: [])
    monkeypatch.setattr("benchmarks.run.keys.scenarios", lambda _c, _r: fixed)
    assert run.main(["--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "results.json").read_text())
    assert [(r["scenario"], r["speed"], r["met"]) for r in payload["results"]] == [
        ("fast one", 4.0, True), ("slow one", 0.5, False), ("no target", 0.5, None),
    ]  # fmt: skip
    assert payload["meta"]["command"] == "python -m benchmarks --quick"
    md = (tmp_path / "results.md").read_text()
    assert "| fast one | ours | theirs | 1.00 | 4.00 | **4.00** | 3% | met (>= 2) |" in md
    assert "| slow one | ours | bare | 10.00 | 5.00 | **0.50** | 1% | MISSED (>= 0.7) |" in md
    png = (tmp_path / "speed.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
