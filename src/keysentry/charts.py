"""Usage charts as SVG, drawn on the server: no script, no remote asset (the docs' pictures,
and what a page can inline).

:func:`usage_svg` stacks each bucket's verifications by outcome (or key), zero-filled across
the range, with an axis of counts and the range's start and end under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from keysentry.usage import GRANULARITIES, UsagePoint

__all__ = ["nice_scale", "usage_svg"]

#: Colours per outcome ("ok" green, refusals warm); other groups take the palette in turn.
COLOURS = {"ok": "#2e7d32", "rate_limited": "#f9a825", "permission_denied": "#ef6c00",
           "resource_denied": "#e65100", "invalid_key": "#c62828", "key_revoked": "#6a1b9a",
           "key_expired": "#4527a0", "unavailable": "#546e7a"}  # fmt: skip
PALETTE = ("#1565c0", "#00838f", "#ad1457", "#5d4037", "#7cb342", "#8e24aa", "#3949ab")


def nice_scale(peak: int) -> tuple[int, int]:
    """``(step, top)`` for an axis reaching at least *peak*: a step of 1, 2 or 5 times a
    power of ten, and at most five steps (``nice_scale(2525) == (1000, 3000)``)."""
    if peak <= 0:
        return 1, 1
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * magnitude
            if step * 5 >= peak:
                return step, -(-peak // step) * step
        magnitude *= 10


def usage_svg(
    points: Sequence[UsagePoint],
    start: int,
    end: int,
    granularity: str,
    *,
    group_by: str = "outcome",
    width: int = 720,
    height: int = 240,
    title: str = "",
) -> str:
    """An SVG document charting *points* between *start* and *end* (Unix seconds)."""
    seconds = GRANULARITIES[granularity]
    buckets = max(1, (end - start) // seconds)
    stacks: list[dict[str, int]] = [{} for _ in range(buckets)]
    for point in points:
        index = (int(point.start.timestamp()) - start) // seconds
        if 0 <= index < buckets:
            group = (point.outcome if group_by == "outcome" else point.key_id) or "(no key)"
            stacks[index][group] = stacks[index].get(group, 0) + point.count
    groups = sorted({g for stack in stacks for g in stack}, key=lambda g: (g != "ok", g))
    colours = {g: COLOURS.get(g, PALETTE[i % len(PALETTE)]) for i, g in enumerate(groups)}
    step, top = nice_scale(max((sum(stack.values()) for stack in stacks), default=0))
    left, bottom, legend = 48, 28, 22
    plot_w, plot_h = width - left - 8, height - bottom - legend - 8
    bar = plot_w / buckets
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title or 'Verifications')}</title>",
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
    ]
    for tick in range(0, top + 1, step):
        y = legend + plot_h * (1 - tick / top)
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')  # fmt: skip
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{tick:,}</text>")  # fmt: skip
    for index, stack in enumerate(stacks):
        y = legend + plot_h
        for group in groups:
            n = stack.get(group, 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            parts.append(
                f'<rect x="{left + index * bar:.2f}" y="{y:.2f}" width="{max(bar - 0.5, 0.5):.2f}" '
                f'height="{h:.2f}" fill="{colours[group]}"><title>{escape(group)}: {n:,}'
                "</title></rect>"
            )
    x = left
    for group in groups:
        parts.append(f'<rect x="{x}" y="4" width="10" height="10" fill="{colours[group]}"/>')
        parts.append(f'<text x="{x + 14}" y="13">{escape(group)}</text>')
        x += 22 + 6 * len(group)  # about a character's width at 11 px
    for at, anchor, px in ((start, "start", left), (end, "end", width - 8)):
        label = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%MZ")
        parts.append(f'<text x="{px}" y="{height - 8}" text-anchor="{anchor}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
