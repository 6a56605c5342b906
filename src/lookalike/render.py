"""Presenting search results: a text table, JSON, a contact sheet (PNG) and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import ImageDecodeError
from .files import display_path
from .images import open_image_file
from .search import Evidence, Fraction, Hit, QueryResult

if TYPE_CHECKING:
    from .tune import TuneResult
from .storage import atomic_write_bytes, atomic_write_with

THUMB = 176
CAPTION = 34
GAP = 8


def printable(path: str) -> str:
    """A path as one line of text that can always be printed (undecodable bytes and control characters escaped)."""
    return display_path(path)


def render_table(results: Sequence[QueryResult], explain: bool = False) -> str:
    """Rank, score, id and path of every hit, one block per query.

    Hits of the accurate search also show `copy` (or `-`) and their copy score after the score; with `explain`,
    a line under each says which view of the query found it and what verified it.
    """
    lines = []
    for result in results:
        lines.append(f"query: {printable(result.query)}")
        if result.error is not None:
            lines.append(f"  (not searched: {result.error})")
        elif not result.hits:
            lines.append("  (no results)")
        for rank, hit in enumerate(result.hits, 1):
            lines.append(f"  {rank:>3}  {hit.score:6.3f}  {_copy_columns(hit)}{hit.id:>8}  {printable(hit.path)}")
            if explain and hit.evidence is not None:
                lines.append(f"       {explain_hit(hit.evidence)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _copy_columns(hit: Hit) -> str:
    if hit.copy_score is None:
        return ""  # the fast search: today's columns
    return f"{'copy' if hit.copy else '-':<4}  {hit.copy_score:4.2f}  "


def explain_hit(evidence: Evidence) -> str:
    """One line: the query view closest to the hit, where it lies, and the verified matches."""
    left, top, right, bottom = evidence.box
    where = f"x {left:.2f}-{right:.2f}, y {top:.2f}-{bottom:.2f} of the query"
    mirrored = ", the query mirrored" if evidence.mirrored else ""
    if evidence.verified:
        verified = f"verified: {evidence.inliers} inliers{mirrored}"
    elif evidence.inliers:
        verified = f"not verified ({evidence.inliers} inliers, as chance gives{mirrored})"
    else:
        verified = "not verified"
    return f"view {evidence.view} ({where}); {verified}"


def render_json(results: Sequence[QueryResult]) -> str:
    """The `lookalike search --json` contract: one object per query, in order."""
    return json.dumps([result.to_dict() for result in results], indent=2)


def load_thumbnail(path: str, size: int = THUMB) -> Image.Image:
    """A thumbnail of an image file (a grey placeholder if it cannot be read any more)."""
    try:
        image = open_image_file(path, min_size=size)
    except ImageDecodeError:
        return Image.new("RGB", (size, size), (200, 200, 200))
    image.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return image


def write_contact_sheet(
    results: Sequence[QueryResult], out: str | os.PathLike, size: int = THUMB, explain: bool = False
) -> None:
    """A PNG with one row per query: the query, then its hits with rank, score and file name.

    With `explain`, the part of the query that matched the first hit is outlined on the query.
    """
    columns = 1 + max((len(r.hits) for r in results), default=0)
    cell_w, cell_h = size + GAP, size + CAPTION + GAP
    sheet = Image.new("RGB", (GAP + columns * cell_w, GAP + len(results) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for row, result in enumerate(results):
        cells = [(result.query, "query")] + [
            (hit.path, f"#{rank} {hit.score:.3f}" + (" copy" if hit.copy else ""))
            for rank, hit in enumerate(result.hits, 1)
        ]
        for column, (path, label) in enumerate(cells):
            x, y = GAP + column * cell_w, GAP + row * cell_h
            thumb = load_thumbnail(path, size)
            sheet.paste(thumb, (x + (size - thumb.width) // 2, y + (size - thumb.height) // 2))
            if column == 0:
                draw.rectangle((x - 2, y - 2, x + size + 1, y + size + 1), outline=(30, 90, 200), width=2)
                matched = _matched_region(result) if explain else None
                if matched is not None:
                    left = x + (size - thumb.width) // 2
                    top = y + (size - thumb.height) // 2
                    draw.rectangle(_on_thumb(matched, left, top, thumb.size), outline=(230, 60, 40), width=2)
            draw.text((x, y + size + 3), label, fill="black", font=font)
            draw.text((x, y + size + 18), _fit(os.path.basename(printable(path)), 26), fill=(90, 90, 90), font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(Path(out), buffer.getvalue())


def _matched_region(result: QueryResult) -> Fraction | None:
    """The verified region of the first hit, else the box of the view that found it."""
    evidence = result.hits[0].evidence if result.hits else None
    if evidence is None:
        return None
    return evidence.region or evidence.box


def _on_thumb(region: Fraction, left: int, top: int, thumb_size: tuple[int, int]) -> tuple[int, int, int, int]:
    width, height = thumb_size
    return (
        left + round(region[0] * (width - 1)),
        top + round(region[1] * (height - 1)),
        left + round(region[2] * (width - 1)),
        top + round(region[3] * (height - 1)),
    )


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _data_uri(path: str, size: int) -> str:
    buffer = io.BytesIO()
    load_thumbnail(path, size).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>lookalike results</title>
<style>
body{{font:15px system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}}
h2{{font-size:1rem;margin:1.5rem 0 .5rem;word-break:break-all}}
.row{{display:flex;flex-wrap:wrap;gap:.75rem}}
figure{{margin:0;width:{size}px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}}
figure.query{{border:2px solid #1e5ac8}}
img{{display:block;width:{size}px;height:{size}px;object-fit:contain;background:#eee}}
figcaption{{font-size:12px;margin-top:4px;word-break:break-all}} .score{{font-weight:600}}
</style></head><body><h1>lookalike results</h1>
{body}
</body></html>
"""


def render_html(results: Sequence[QueryResult], size: int = THUMB) -> str:
    """A self-contained page (thumbnails inlined as data URIs) showing each query and its hits."""
    blocks = []
    for result in results:
        figures = [_figure(result.query, "query", "query", size)]
        for rank, hit in enumerate(result.hits, 1):
            label = f"#{rank} · {hit.score:.3f}" + (" · copy" if hit.copy else "")
            figures.append(_figure(hit.path, label, "", size))
        blocks.append(f"<h2>{html.escape(printable(result.query))}</h2><div class='row'>{''.join(figures)}</div>")
    return _PAGE.format(size=size, body="\n".join(blocks))


def _figure(path: str, label: str, css_class: str, size: int) -> str:
    name = html.escape(printable(path))
    return (
        f"<figure class='{css_class}'><img alt='{name}' src='{_data_uri(path, size)}'>"
        f"<figcaption><span class='score'>{html.escape(label)}</span><br>{name}</figcaption></figure>"
    )


def write_html(results: Sequence[QueryResult], out: str | os.PathLike) -> None:
    """Write `render_html` atomically to `out`."""
    atomic_write_bytes(Path(out), render_html(results).encode("utf-8"))


# --- the tuning plot -------------------------------------------------------------------------------------------


def write_plot(result: TuneResult, path: str | Path) -> None:
    """A PNG of recall@k against single-query latency (log scale), with the target and the chosen point."""
    width, height, left, right, top, bottom = 760, 480, 70, 30, 40, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    points = result.points
    latencies = [max(p.p50_ms, 1e-3) for p in points] or [1.0]
    low = 10 ** np.floor(np.log10(min(latencies)))
    high = 10 ** np.ceil(np.log10(max(latencies) * 1.01))
    floor = min([p.recall for p in points] + [result.target_recall]) if points else 0.0
    floor = max(0.0, np.floor(floor * 10) / 10)

    def xy(latency: float, recall: float) -> tuple[float, float]:
        x = (np.log10(max(latency, 1e-3)) - np.log10(low)) / max(1e-9, np.log10(high) - np.log10(low))
        y = (recall - floor) / max(1e-9, 1.0 - floor)
        return left + x * (width - left - right), height - bottom - y * (height - top - bottom)

    grey, dark = (200, 200, 200), (40, 40, 40)
    draw.rectangle((left, top, width - right, height - bottom), outline=dark)
    decade = low
    while decade <= high * 1.0001:
        x, _ = xy(decade, floor)
        draw.line((x, top, x, height - bottom), fill=grey)
        draw.text((x - 12, height - bottom + 6), f"{decade:g}", fill=dark)
        decade *= 10
    for i in range(11):
        recall = floor + (1.0 - floor) * i / 10
        _, y = xy(low, recall)
        draw.line((left, y, width - right, y), fill=grey)
        draw.text((8, y - 6), f"{recall:.2f}", fill=dark)
    _, target_y = xy(low, result.target_recall)
    draw.line((left, target_y, width - right, target_y), fill=(200, 60, 60), width=2)
    draw.text((width - right - 120, target_y - 16), f"target {result.target_recall:g}", fill=(200, 60, 60))
    coords = [xy(p.p50_ms, p.recall) for p in points]
    if len(coords) > 1:
        draw.line(coords, fill=(50, 90, 200), width=2)
    for point, (x, y) in zip(points, coords):
        chosen = result.chosen is not None and point.value == result.chosen.value
        r = 6 if chosen else 4
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(230, 140, 20) if chosen else (50, 90, 200))
        draw.text((x + 6, y + 4), str(point.value), fill=dark)
    draw.text(
        (left, 12),
        f"{result.factory}: recall@{result.k} vs single-query p50 latency, {result.count} vectors, "
        f"{result.queries} queries ({result.param})",
        fill=dark,
    )
    draw.text((width // 2 - 60, height - 24), "p50 latency (ms, log scale)", fill=dark)
    atomic_write_with(path, lambda scratch: image.save(scratch, format="PNG"))
