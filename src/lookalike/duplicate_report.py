"""Duplicate groups for people: a text listing with a summary, a review page, and what an action plan does.

Kept apart from `render.py` (search results) because a group reads differently: a keeper, its copies, how
they differ (pixels, bytes, date), and what acting on them would free.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .duplicates import DuplicateGroup, Member
from .files import display_path
from .quarantine import Plan
from .storage import atomic_write_bytes

THUMB = 200


@dataclass(frozen=True)
class DuplicateSummary:
    """How many groups and files, and the bytes the non-keepers take (what removing them would free)."""

    groups: int
    files: int  # every member of every group, keepers included
    removable: int  # the non-keepers
    removable_bytes: int

    def line(self) -> str:
        return (
            f"{self.groups} groups, {self.files} files: {self.removable} not kept, "
            f"{human_bytes(self.removable_bytes)} to free"
        )


def summarise(groups: Sequence[DuplicateGroup]) -> DuplicateSummary:
    """Totals over `groups` (a file is a non-keeper in one group at most, so nothing is counted twice)."""
    others = [(group, member) for group in groups for member in group.others]
    freed = sum(group.facts[member.id].size for group, member in others if member.id in group.facts)
    return DuplicateSummary(len(groups), sum(len(g.members) for g in groups), len(others), freed)


def human_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover - the loop returns


def render_groups_json(groups: Sequence[DuplicateGroup]) -> str:
    """The `duplicates --json` contract: an array of {"tier", "keep": {"id", "path"}, "members": [...]}."""
    return json.dumps([group.to_dict() for group in groups], indent=2)


def render_listing(groups: Sequence[DuplicateGroup]) -> str:
    """One block per group: tier and why the keeper is kept, then the keeper (*) and the others."""
    lines = []
    for number, group in enumerate(groups, 1):
        lines.append(f"group {number} [{group.tier}] keep: {display_path(group.keep.path)} ({group.reason})")
        for member in group.members:
            mark = "*" if member.id == group.keep.id else " "
            lines.append(f"  {mark} {member.similarity:6.3f} {member.id:>8}  {_facts_text(group, member)}")
        lines.append("")
    lines.append(summarise(groups).line())
    return "\n".join(lines) + "\n"


def render_plan(plan: Plan, applied: bool) -> str:
    """What an action does (or, unapplied, would do), one line a file, and a last line to say which."""
    verb = {"move": "move", "hardlink": "link", "restore": "restore"}[plan.kind]
    lines = [f"{verb} {display_path(step.source)} -> {display_path(step.target)}" for step in plan.steps]
    if plan.kind == "hardlink":
        lines = [f"link {display_path(step.target)} -> {display_path(step.source)}" for step in plan.steps]
    size = human_bytes(plan.bytes_freed)
    if applied:
        lines.append(f"done: {len(plan.steps)} files ({size})")
    else:
        lines.append(f"dry run: {len(plan.steps)} files ({size}) would change; nothing was done (add --apply)")
    return "\n".join(lines) + "\n"


def _facts_text(group: DuplicateGroup, member: Member) -> str:
    facts = group.facts.get(member.id)
    if facts is None:
        return display_path(member.path)
    when = time.strftime("%Y-%m-%d", time.localtime(facts.mtime_ns / 1e9))
    return f"{facts.width}x{facts.height} {human_bytes(facts.size):>9} {when}  {display_path(member.path)}"


# --- the review page -------------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>lookalike duplicates</title>
<style>
body{{font:15px system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}}
h2{{font-size:1rem;margin:1.5rem 0 .5rem}} .reason{{color:#555;font-weight:normal}}
.row{{display:flex;flex-wrap:wrap;gap:.75rem}}
figure{{margin:0;width:{size}px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}}
figure.keep{{border:3px solid #1a8f3a}}
img{{display:block;width:{size}px;height:{size}px;object-fit:contain;background:#eee}}
figcaption{{font-size:12px;margin-top:4px;word-break:break-all}} .diff{{color:#b35c00}}
</style></head><body><h1>lookalike duplicates</h1><p>{summary}</p>
{body}
</body></html>
"""


def render_review_page(groups: Sequence[DuplicateGroup], size: int = THUMB) -> str:
    """A self-contained page (thumbnails inlined): each group side by side, the keeper framed in green,
    and each member's pixels, bytes and date, with what differs from the keeper highlighted."""
    from .render import load_thumbnail  # Pillow and the decoder only when a page is written

    blocks = []
    for number, group in enumerate(groups, 1):
        figures = [_figure(group, member, size, load_thumbnail) for member in group.members]
        title = (
            f"group {number} · {html.escape(group.tier)} <span class='reason'>kept: {html.escape(group.reason)}</span>"
        )
        blocks.append(f"<h2>{title}</h2><div class='row'>{''.join(figures)}</div>")
    return _PAGE.format(size=size, summary=html.escape(summarise(groups).line()), body="\n".join(blocks))


def write_review_page(groups: Sequence[DuplicateGroup], out: str | os.PathLike) -> None:
    """Write `render_review_page` atomically to `out`."""
    atomic_write_bytes(Path(out), render_review_page(groups).encode("utf-8"))


def _figure(group: DuplicateGroup, member: Member, size: int, load_thumbnail: Callable[[str, int], Any]) -> str:
    keep = group.facts.get(group.keep.id)
    facts = group.facts.get(member.id)
    name = html.escape(display_path(member.path))
    buffer = io.BytesIO()
    load_thumbnail(member.path, size).save(buffer, format="JPEG", quality=82)
    source = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    details = []
    if facts is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(facts.mtime_ns / 1e9))
        for text, differs in (
            (f"{facts.width}x{facts.height}", keep is not None and facts.pixels != keep.pixels),
            (human_bytes(facts.size), keep is not None and facts.size != keep.size),
            (when, keep is not None and facts.mtime_ns != keep.mtime_ns),
        ):
            details.append(f"<span class='diff'>{text}</span>" if differs else text)
    label = "keep" if member.id == group.keep.id else f"similarity {member.similarity:.3f}"
    css = "keep" if member.id == group.keep.id else ""
    return (
        f"<figure class='{css}'><img alt='{name}' src='{source}'><figcaption><b>{label}</b> · id {member.id}<br>"
        f"{' · '.join(details)}<br>{name}</figcaption></figure>"
    )
