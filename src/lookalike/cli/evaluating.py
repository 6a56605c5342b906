"""`lookalike eval`: how well the collection finds edited copies of its own images, per edit family."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from .common import Progress, index_option, notice, run

if TYPE_CHECKING:
    from ..evaluate import EvalReport


@click.command(name="eval")
@index_option
@click.option(
    "--sample", type=click.IntRange(1), default=20, show_default=True, help="Images to copy (seeded; all if fewer)."
)
@click.option(
    "--edits", type=click.Choice(["mild", "hard"]), default="mild", show_default=True, help="The tier of edits."
)
@click.option("--families", help="Only these families of the tier, comma-separated (e.g. crop,flip).")
@click.option("--fast", is_flag=True, help="Measure the fast search (one vector per query, no copy flag).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample and of the edits.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evaluate(
    index_dir: str, sample: int, edits: str, families: str | None, fast: bool, seed: int, as_json: bool
) -> None:
    """Make seeded edited copies of a sample of the collection's images and measure how well search finds them.

    The copies are written to a temporary folder (never inside the collection or its photo folders) and removed
    afterwards; the collection is only read. Prints recall@1 and recall@10 per edit family, the precision of the
    copy flag (accurate search) and the latency per query.
    """
    from ..collection import Collection
    from ..evaluate import evaluate as measure

    names = [name.strip() for name in families.split(",") if name.strip()] if families else None
    progress = Progress(not as_json, unit="copy")

    def action() -> Any:
        with Collection.open(index_dir, on_notice=notice, read_only=True) as collection:
            mode = "fast" if fast else "accurate"
            return measure(collection, sample, edits, names, mode, seed, on_progress=progress)

    try:
        report = run(action)
    finally:
        progress.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    print_report(report)


def print_report(report: EvalReport) -> None:
    """The table per family, the copy flag's precision, the latency and the originals that could not be read."""
    from ..verify import COPY_THRESHOLD

    mode = "accurate search" if report.mode == "accurate" else "fast search (one vector per query)"
    click.echo(
        f"{report.images} images x {len(report.families)} {report.edits} edits = {len(report.outcomes)} "
        f"edited copies, {mode}, seed {report.seed}"
    )
    click.echo(f"{'family':<16} {'copies':>6} {'recall@1':>9} {'recall@' + str(report.k):>10}")
    for name, row in report.recall().items():
        click.echo(f"{name:<16} {row.copies:>6} {row.recall_at_1:>9.3f} {row.recall_at_k:>10.3f}")
    flag = report.copy_flag()
    if flag is None:
        click.echo("copy flag: none in the fast search")
    else:
        precision = "n/a" if flag["precision"] is None else f"{flag['precision']:.3f}"
        click.echo(
            f"copy flag (copy score >= {COPY_THRESHOLD}): {flag['flagged']} hits flagged, {flag['right']} right "
            f"(precision {precision}); {flag['originals_flagged']} of {len(report.outcomes)} originals flagged"
        )
    latency = report.latency_ms()
    click.echo(f"latency per query: p50 {latency['p50']:.0f} ms, p99 {latency['p99']:.0f} ms (model loaded)")
    for path, reason in report.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
