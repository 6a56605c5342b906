"""`lookalike duplicates`: list, review and act on the duplicate groups of a collection."""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import fail, index_option, notice, run

TIERS = ("identical", "same-image", "near")


@click.command()
@index_option
@click.option(
    "--tier",
    type=click.Choice(TIERS),
    default="near",
    show_default=True,
    help="The loosest tier reported (stricter ones are always included).",
)
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), help="Cosine floor of that tier (default: measured).")
@click.option("--json", "as_json", is_flag=True, help="Print the groups as a JSON array.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write a self-contained review page.")
@click.option(
    "--reference",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A folder whose files are kept first (repeatable).",
)
@click.option(
    "--linkage",
    type=click.Choice(["star", "components"]),
    default="star",
    show_default=True,
    help="star: every member close to its keeper; components: chains of close pairs.",
)
@click.option("--move-to", type=click.Path(file_okay=False), help="Move non-keepers into this quarantine folder.")
@click.option("--hardlink", is_flag=True, help="Replace identical copies by hard links to their keeper.")
@click.option("--undo", "undo_dir", type=click.Path(file_okay=False), help="Put back what a move put in this folder.")
@click.option("--apply", "apply_", is_flag=True, help="Do the action (without it, only print what it would do).")
def duplicates(
    index_dir: str,
    tier: str,
    threshold: float | None,
    as_json: bool,
    html_out: str | None,
    reference: tuple[str, ...],
    linkage: str,
    move_to: str | None,
    hardlink: bool,
    undo_dir: str | None,
    apply_: bool,
) -> None:
    """Find byte-identical, same-picture and near-duplicate images; move or link the copies, safely.

    Every action is a dry run unless --apply is given; nothing is ever deleted.
    """
    from ..collection import Collection

    actions = [name for name, given in (("move", move_to), ("hardlink", hardlink), ("undo", undo_dir)) if given]
    if len(actions) > 1:
        fail("give one of --move-to, --hardlink and --undo")
    if apply_ and not actions:
        fail("--apply needs an action: --move-to DIR, --hardlink or --undo DIR")
    action = actions[0] if actions else None

    def work() -> Any:
        # Without --apply nothing is written, not even to the catalog: the collection opens read-only.
        with Collection.open(index_dir, on_notice=notice, read_only=not apply_) as collection:
            groups = [] if action == "undo" else collection.duplicates(tier, threshold, reference, linkage)
            plan = collection.plan_duplicate_action(action, groups, move_to or undo_dir) if action else None
            if plan is not None and apply_:
                collection.apply_duplicate_action(plan)
            return groups, plan

    groups, plan = run(work)
    _report(groups, plan, action, as_json, html_out, apply_)


def _report(groups: list, plan: Any, action: str | None, as_json: bool, html_out: str | None, applied: bool) -> None:
    from ..duplicate_report import render_groups_json, render_listing, render_plan, write_review_page

    if action != "undo":
        click.echo(render_groups_json(groups) + "\n" if as_json else render_listing(groups), nl=False)
    if html_out:
        run(lambda: write_review_page(groups, html_out))
        click.echo(f"review page: {html_out}", err=as_json)
    if plan is not None:
        # With --json, stdout carries only the groups; what the action does goes to stderr.
        click.echo(render_plan(plan, applied), nl=False, err=as_json)
    sys.stdout.flush()
