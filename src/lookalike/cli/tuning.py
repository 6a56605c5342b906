"""`lookalike tune` and `lookalike plan`: speed against recall, and what `auto` would build."""

from __future__ import annotations

import json
from typing import Any

import click

from .common import fail, index_option, notice, run


@click.command()
@index_option
@click.option(
    "--target-recall",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.95,
    show_default=True,
    help="Recall@k the stored setting must reach.",
)
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="Recall is measured at k.")
@click.option("--queries", type=click.IntRange(1), default=500, show_default=True, help="Held-out queries (seeded).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the query sample.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a recall-vs-latency PNG here.")
@click.option("--dry-run", is_flag=True, help="Measure and print, but do not store the chosen setting.")
def tune(
    index_dir: str, target_recall: float, k: int, queries: int, seed: int, plot: str | None, dry_run: bool
) -> None:
    """Measure recall against latency for the index's search knob and store the fastest setting meeting the target.

    Queries are a seeded sample of the collection's own images; each query's own match is left out of both the
    exact neighbours and the results. Latency is per query, one query per search call (p50, p99); the batch
    column is the time per query when all run in one call.
    """
    from ..collection import Collection
    from ..render import write_plot

    def action() -> Any:
        with Collection.open(index_dir, on_notice=notice) as collection:
            return collection.tune(target_recall, k, queries, seed, store=not dry_run)

    result = run(action)
    click.echo(
        f"index: {result.factory}, {result.count} vectors; {result.queries} queries from the collection "
        f"(self-matches left out), recall@{result.k} against exact search"
    )
    if not result.tunable:
        click.echo("exact search (recall 1.0): nothing to tune")
        return
    frontier = {point.value for point in result.frontier()}
    click.echo(
        f"{result.param:>9} {'recall@' + str(result.k):>10} {'recall@1':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'batch ms/q':>11}  frontier"
    )
    for point in result.points:
        click.echo(
            f"{point.value:>9} {point.recall:>10.4f} {point.recall_at_1:>9.4f} {point.p50_ms:>8.3f} "
            f"{point.p99_ms:>8.3f} {point.batch_ms_per_query:>11.3f}  {'*' if point.value in frontier else ''}"
        )
    if plot:
        run(lambda: write_plot(result, plot))
        click.echo(f"plot: {plot}", err=True)
    chosen = result.chosen
    kept = "kept as the default for later searches" if result.stored else "not stored (--dry-run)"
    if result.met:
        click.echo(
            f"chosen: {chosen.label()} (recall@{result.k} {chosen.recall:.4f} >= {target_recall}, "
            f"p50 {chosen.p50_ms:.3f} ms): {kept}"
        )
        return
    fail(
        f"no setting reaches recall@{result.k} {target_recall}; best is {chosen.label()} "
        f"(recall {chosen.recall:.4f}), {kept}: rebuild with a more exact kind (e.g. --kind flat or ivf)"
    )


@click.command()
@click.option("--index", "index_dir", type=click.Path(file_okay=False), help="Plan for this collection's size.")
@click.option("--vectors", type=click.IntRange(0), help="Plan for a hypothetical collection of this many vectors.")
@click.option("--dim", type=click.IntRange(1), help="Their dimension (with --vectors; default 1280).")
@click.option("--metric", type=click.Choice(["cosine", "l2"]), default=None, help="With --vectors (default cosine).")
@click.option("--max-memory", help="RAM budget for the index, e.g. 2GB or 512MiB.")
@click.option(
    "--target-recall", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True, help="Recall@10."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plan(
    index_dir: str | None,
    vectors: int | None,
    dim: int | None,
    metric: str | None,
    max_memory: str | None,
    target_recall: float,
    as_json: bool,
) -> None:
    """Show the index `auto` would build, its predicted memory, training set and build time, without building."""
    from ..planner import estimate_plan, plan_auto
    from ..sizes import format_size, parse_size

    if (index_dir is None) == (vectors is None):
        fail("give either --index DIR or --vectors N (with --dim D)", 2)
    budget = None
    if max_memory is not None:
        from ..errors import InvalidArgumentError

        try:
            budget = parse_size(max_memory)
        except InvalidArgumentError:
            fail(f"--max-memory wants a size such as 2GB, 512MB or 1.5GiB, not {max_memory!r}", 2)
    current = None
    if index_dir is not None:
        from ..collection import Collection

        def read() -> Any:
            with Collection.open(index_dir, on_notice=notice) as collection:
                return collection.catalog.count_embeddings(), collection.dim, collection.metric, collection.info()

        vectors, dim, metric, details = run(read)
        current = details.index_factory if details.index_vectors else None
    dim = dim or 1280
    metric = metric or "cosine"

    count = int(vectors or 0)

    def make() -> Any:
        chosen = plan_auto(count, dim, metric, max_memory=budget, target_recall=target_recall)
        return chosen, estimate_plan(chosen, count, dim)

    chosen, estimate = run(make)
    if as_json:
        data = {"vectors": vectors, "dim": dim, "plan": chosen.to_dict(), "estimate": estimate.to_dict()}
        click.echo(json.dumps({**data, "current_factory": current}, indent=2))
        return
    click.echo(f"vectors:          {vectors} x {dim}-d ({metric})")
    click.echo(f"factory:          {chosen.factory} ({chosen.kind})")
    click.echo(
        f"memory:           ~{format_size(estimate.memory_bytes, '.2f')} "
        f"({estimate.bytes_per_vector:.0f} B/vector x N + "
        f"{format_size(estimate.overhead_bytes, '.2f')})" + (f", budget {format_size(budget, '.2f')}" if budget else "")
    )
    click.echo(f"training set:     {estimate.train_size} vectors" if estimate.train_size else "training set:     none")
    click.echo(f"build time:       ~{_duration(estimate.build_seconds)} (rough, 2-core CPU)")
    click.echo(f"recall ceiling:   ~{estimate.recall_ceiling:.2f} recall@10 (what its vector codes allow)")
    click.echo(f"why:              {chosen.reason}")
    if current is not None:
        click.echo(f"current index:    {current}")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
