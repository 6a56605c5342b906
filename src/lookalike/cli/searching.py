"""`lookalike search`, `info`, `models` and `demo`: read a collection."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .common import Progress, device_option, fail, index_option, max_megapixels_option, notice, run


@click.command()
@click.argument("queries", nargs=-1, type=click.Path())
@index_option
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True, help="Results per query.")
@click.option("--id", "ids", type=int, multiple=True, help="Search with an indexed image by its id (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per query.")
@click.option("--nprobe", type=click.IntRange(1), help="IVF: lists to visit (more: better recall, slower).")
@click.option("--ef", type=click.IntRange(1), help="HNSW: search beam (more: better recall, slower).")
@click.option(
    "--fast",
    is_flag=True,
    help="One vector of the whole picture, no copy check: quicker, for large batches of queries.",
)
@click.option("--explain", is_flag=True, help="Say which part of the query matched each hit and what verified it.")
@click.option("--sheet", type=click.Path(dir_okay=False), help="Write a contact sheet PNG here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write a self-contained HTML page here.")
@device_option
@max_megapixels_option
def search(
    queries: tuple[str, ...],
    index_dir: str,
    k: int,
    ids: tuple[int, ...],
    as_json: bool,
    nprobe: int | None,
    ef: int | None,
    fast: bool,
    explain: bool,
    sheet: str | None,
    html_out: str | None,
    device: str,
    max_megapixels: float | None,
) -> None:
    """Find the K images most like each QUERY image, and say which are copies of it.

    By default each query is searched by several views (turns, tiles, rectangles found in it) and the first
    candidates are verified by local features: every hit gets a copy score, and `copy` when it reaches 0.5.
    --fast searches with one vector of the whole picture (all queries in one batch), as --id always does.
    """
    from ..collection import Collection
    from ..render import printable as display_path
    from ..render import render_json, render_table, write_contact_sheet, write_html

    if not queries and not ids:
        fail("give at least one query image, or --id N")
    if explain and fast:
        fail("--explain shows what the accurate search found: leave out --fast")
    failed: list[str] = []

    def report(query: str, reason: str) -> None:
        failed.append(query)
        click.echo(f"error: query {display_path(query)}: {reason}", err=True)

    def action() -> Any:
        with Collection.open(index_dir, device=device, on_notice=notice) as collection:
            collection.max_megapixels = max_megapixels
            results = collection.search_ids(list(ids), k, nprobe, ef) if ids else []
            if queries:
                mode = "fast" if fast else "accurate"
                results += collection.search(list(queries), k, nprobe, ef, on_error=report, mode=mode)
            return results

    results = run(action)
    click.echo(render_json(results) if as_json else render_table(results, explain), nl=not as_json)
    if sheet:
        run(lambda: write_contact_sheet(results, sheet, explain=explain))
        click.echo(f"contact sheet: {sheet}", err=True)
    if html_out:
        run(lambda: write_html(results, html_out))
        click.echo(f"results page: {html_out}", err=True)
    if failed:
        sys.exit(1)


@click.command()
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(index_dir: str, as_json: bool) -> None:
    """Counts, skipped files with reasons, embedder, index kind and sizes."""
    from ..collection import Collection
    from ..render import printable
    from ..sizes import format_size

    def read() -> Any:
        with Collection.open(index_dir, on_notice=notice) as collection:
            return collection.info()

    details = run(read)
    if as_json:
        click.echo(json.dumps(details.to_dict(), indent=2))
        return
    click.echo(f"index folder:  {details.folder}")
    click.echo(f"images:        {details.images} indexed, {details.skipped} skipped")
    click.echo(f"embedder:      {details.embedder} ({details.dim}-d, {details.metric})")
    click.echo(
        f"index:         {details.index_factory} ({details.index_kind}), {details.index_vectors} vectors"
        + (f", {details.tombstones} removed since the last rebuild" if details.tombstones else "")
    )
    if details.search_params:
        click.echo(f"search params: {details.search_params}")
    click.echo(
        "on disk:       " + ", ".join(f"{name} {format_size(size)}" for name, size in details.bytes_on_disk.items())
    )
    if details.embedding_shard_files:
        click.echo(
            f"embeddings:    {details.embedding_shard_files} shard files beside the catalog (from --ray ingests)"
        )
    if details.temp_files:
        click.echo(f"temp files:    {details.temp_files} left by an interrupted update (the next update removes them)")
    for path, reason in details.skipped_files:
        click.echo(f"skipped:       {printable(path)}: {reason}")


@click.command()
def models() -> None:
    """List the embedders lookalike knows."""
    from ..embedders import embedder_names, get_embedder_spec

    for name in embedder_names():
        spec = get_embedder_spec(name)
        click.echo(f"{name:20} {spec.dim:5}-d  {spec.description}")


@click.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False),
    default="lookalike-demo",
    show_default=True,
    help="Where to write the sample photos, the index and the results.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def demo(folder: str, quiet: bool) -> None:
    """Index a sample collection of real photos and search it with an unseen copy of one of them."""
    from pathlib import Path

    from ..collection import Collection
    from ..demo import make_query, make_sample_collection
    from ..render import render_table, write_contact_sheet, write_html

    base = Path(folder)
    progress = Progress(not quiet)

    def action() -> Any:
        photos = base / "photos"
        written = make_sample_collection(photos)
        click.echo(f"sample collection: {len(written)} images in {photos}")
        query = make_query(base / "queries")
        with Collection.create(base / "index", on_notice=notice) as collection:
            report = collection.add_folder(photos, on_progress=progress)
            progress.close()
            click.echo(report.summary())
            return collection.search([str(query)], k=8)

    results = run(action)
    write_contact_sheet(results, base / "results.png")
    write_html(results, base / "results.html")
    click.echo(render_table(results), nl=False)
    click.echo(f"contact sheet: {base / 'results.png'}")
    click.echo(f"results page:  {base / 'results.html'}")
