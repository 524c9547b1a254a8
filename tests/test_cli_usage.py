"""``keysentry usage`` and ``keysentry keys stale``: tables with sparklines, ``--json``,
``--top``; bad durations and fields are one error line; and the SVG chart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import pytest

from keysentry import KeySentry
from keysentry._cli_usage import sparkline
from keysentry.charts import nice_scale, usage_svg
from keysentry.cli import main as cli
from keysentry.usage import UsagePoint


@pytest.fixture
def url(tmp_path: Any) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"
    with KeySentry(url) as ks:
        ks.create_api_auth_app("shop", "Shop", "sk_shop", permissions=["a:read"])
        used = ks.create_api_key("shop", "used")
        ks.create_api_key("shop", "never")
        for _ in range(5):
            ks.verify(used.secret)
        ks.verify(used.secret, permissions="a:write")
    return url


def run(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli(["--database-url", url, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_usage_table_and_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(url, capsys, "usage", "shop")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("shop: 6 verifications, ")
    assert lines[1].split()[:3] == ["OUTCOME", "COUNT", "SHARE"]
    assert lines[2].split()[:3] == ["ok", "5", "83.3%"]
    assert lines[3].split()[:3] == ["permission_denied", "1", "16.7%"]
    assert "█" in lines[2]
    code, out, _ = run(url, capsys, "usage", "shop", "--json", "--granularity", "minute")
    points = json.loads(out)
    assert {p["outcome"]: p["count"] for p in points} == {"ok": 5, "permission_denied": 1}
    code, out, _ = run(url, capsys, "usage", "shop", "--top", "refused", "--json")
    assert [k["refused"] for k in json.loads(out)] == [1]


def test_stale_keys(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(url, capsys, "--json", "keys", "stale", "shop", "--unused-for", "30d")
    assert code == 0
    assert [k["name"] for k in json.loads(out)] == ["never"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["usage", "shop", "--since", "3x"], "not a duration"),
        (["usage", "shop", "--granularity", "week"], "invalid choice"),
        (["usage", "shop", "--until", "tomorrow"], "not an ISO 8601 time"),
        (["usage", "shop", "--since", "30d", "--granularity", "minute"], "since: asks for"),
        (["usage", "nope"], "app 'nope' not found"),
        (["keys", "stale", "shop", "--unused-for", "1y"], "not a duration"),
    ],
)
def test_mistakes_are_one_line(
    url: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run(url, capsys, *args)
    assert code in (1, 2)
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_sparkline() -> None:
    assert sparkline([0, 1, 8]) == " ▁█"
    assert sparkline([0, 0]) == "  "
    assert sparkline([3, 3]) == "██"


def test_usage_svg_escapes_and_parses() -> None:
    start = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    points = [
        UsagePoint(start=datetime.fromtimestamp(start + 3600 * h, UTC), count=h + 1,
                   key_id="<script>alert(1)</script>")
        for h in range(3)
    ]  # fmt: skip
    svg = usage_svg(points, start, start + 4 * 3600, "hour", group_by="key", title="a & b")
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    root = ElementTree.fromstring(svg)  # noqa: S314  (our own output: well-formed XML)
    bars = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.find("*") is not None]
    assert len(bars) == 3
    empty = usage_svg([], start, start + timedelta(hours=1).seconds, "minute")
    ElementTree.fromstring(empty)  # noqa: S314


@pytest.mark.parametrize(
    ("peak", "scale"),
    [(0, (1, 1)), (1, (1, 1)), (4, (1, 4)), (7, (2, 8)), (10, (2, 10)), (11, (5, 15)),
     (2525, (1000, 3000)), (1262, (500, 1500)), (100_001, (50_000, 150_000))],
)  # fmt: skip
def test_the_axis_steps_by_1_2_or_5_times_a_power_of_ten(peak: int, scale: tuple[int, int]) -> None:
    step, top = nice_scale(peak)
    assert (step, top) == scale
    assert top >= peak
    assert top // step <= 5
