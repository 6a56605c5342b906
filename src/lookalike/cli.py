"""The `lookalike` command: a thin shell that parses, calls the library, formats and translates errors."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

MAX_SHOWN_SKIPS = 20


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _run(action: Callable[[], Any]) -> Any:
    """Run a library call; LookalikeError becomes one line on stderr and exit status 1."""
    from .errors import LookalikeError

    try:
        return action()
    except LookalikeError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        click.echo("interrupted: everything embedded so far is kept; run the same command again to resume", err=True)
        sys.exit(130)
    except OSError as error:
        _fail(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "))


def _notice(message: str) -> None:
    click.echo(f"note: {message}", err=True)


class _Progress:
    """A tqdm bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, unit: str = "img") -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.unit = unit
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=self.unit, dynamic_ncols=True, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


_index_option = click.option(
    "--index", "index_dir", required=True, type=click.Path(file_okay=False), help="The index folder."
)
_device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the CNN runs.",
)


def _index_options(function: Callable) -> Callable:
    """Options that shape an index kind (all optional; kinds pick sensible values)."""
    for option in reversed(
        [
            click.option("--nlist", type=click.IntRange(1), help="IVF: number of lists (default ~8 x sqrt(N))."),
            click.option("--m", "pq_m", type=click.IntRange(1), help="IVFPQ: sub-quantizers (must divide the dim)."),
            click.option("--nbits", type=click.IntRange(1, 16), help="IVFPQ: bits per sub-quantizer (default 8)."),
            click.option("--hnsw-m", type=click.IntRange(2), help="HNSW: neighbours per node (default 32)."),
            click.option("--ef-construction", type=click.IntRange(1), help="HNSW: build-time beam (default 80)."),
        ]
    ):
        function = option(function)
    return function


def _collect_options(
    nlist: int | None, pq_m: int | None, nbits: int | None, hnsw_m: int | None, ef_construction: int | None
) -> dict[str, int]:
    given = {"nlist": nlist, "m": pq_m, "nbits": nbits, "M": hnsw_m, "efConstruction": ef_construction}
    return {key: value for key, value in given.items() if value is not None}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lookalike")
def main() -> None:
    """Find the photos that look like this one."""


@main.command()
@click.argument("photo_dir", type=click.Path(file_okay=False))
@_index_option
@click.option("--kind", help="flat, ivf, ivfpq, hnsw, auto (default) or any Faiss index_factory string.")
@click.option("--model", help="Embedder for a new index (default efficientnet-lite0; see 'lookalike models').")
@click.option("--metric", type=click.Choice(["cosine", "l2"]), help="Similarity for a new index (default cosine).")
@_index_options
@_device_option
@click.option("--workers", type=click.IntRange(1), help="Decoding processes (default: one per core).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def index(
    photo_dir: str,
    index_dir: str,
    kind: str | None,
    model: str | None,
    metric: str | None,
    nlist: int | None,
    pq_m: int | None,
    nbits: int | None,
    hnsw_m: int | None,
    ef_construction: int | None,
    device: str,
    workers: int | None,
    batch_size: int,
    quiet: bool,
) -> None:
    """Index every image under PHOTO_DIR (again: only new or changed files are embedded)."""
    from .collection import Collection

    if not os.path.isdir(photo_dir):
        _fail(f"{photo_dir} is not a folder: give the folder of photos to index")
    options = _collect_options(nlist, pq_m, nbits, hnsw_m, ef_construction)
    progress = _Progress(not quiet)
    skipped: list[tuple[str, str]] = []

    def build() -> Any:
        with Collection.create(index_dir, model=model, metric=metric, device=device, on_notice=_notice) as collection:
            report = collection.add_folder(
                photo_dir,
                kind=kind,
                options=options or None,
                on_progress=progress,
                on_skip=lambda path, reason: skipped.append((path, reason)),
                workers=workers,
                batch_size=batch_size,
            )
            return report, collection.current_plan()

    try:
        report, plan = _run(build)
    finally:
        progress.close()
    if quiet:
        return
    from .render import printable

    for path, reason in report.skipped[:MAX_SHOWN_SKIPS]:
        click.echo(f"skipped {printable(path)}: {reason}", err=True)
    if len(report.skipped) > MAX_SHOWN_SKIPS:
        click.echo(
            f"... and {len(report.skipped) - MAX_SHOWN_SKIPS} more: see 'lookalike info --index {index_dir}'", err=True
        )
    click.echo(report.summary())
    click.echo(f"index: {plan.factory} ({plan.kind}; {plan.reason})")


@main.command()
@_index_option
@click.option("--kind", required=True, help="flat, ivf, ivfpq, hnsw, auto or any Faiss index_factory string.")
@click.option("--metric", type=click.Choice(["cosine", "l2"]), help="Change the similarity measure.")
@_index_options
def reindex(
    index_dir: str,
    kind: str,
    metric: str | None,
    nlist: int | None,
    pq_m: int | None,
    nbits: int | None,
    hnsw_m: int | None,
    ef_construction: int | None,
) -> None:
    """Rebuild the Faiss index from the stored embeddings (the CNN does not run)."""
    from .collection import Collection

    options = _collect_options(nlist, pq_m, nbits, hnsw_m, ef_construction)

    def rebuild() -> Any:
        with Collection.open(index_dir, on_notice=_notice) as collection:
            return collection.reindex(kind, metric, options or None), collection.info()

    plan, info = _run(rebuild)
    click.echo(f"rebuilt: {plan.factory} ({plan.kind}; {plan.reason}) with {info.index_vectors} vectors")


@main.command()
@click.argument("queries", nargs=-1, type=click.Path())
@_index_option
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True, help="Results per query.")
@click.option("--id", "ids", type=int, multiple=True, help="Search with an indexed image by its id (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per query.")
@click.option("--nprobe", type=click.IntRange(1), help="IVF: lists to visit (more: better recall, slower).")
@click.option("--ef", type=click.IntRange(1), help="HNSW: search beam (more: better recall, slower).")
@click.option("--sheet", type=click.Path(dir_okay=False), help="Write a contact sheet PNG here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write a self-contained HTML page here.")
@_device_option
def search(
    queries: tuple[str, ...],
    index_dir: str,
    k: int,
    ids: tuple[int, ...],
    as_json: bool,
    nprobe: int | None,
    ef: int | None,
    sheet: str | None,
    html_out: str | None,
    device: str,
) -> None:
    """Find the K images most like each QUERY image (all queries run as one batch)."""
    from .collection import Collection
    from .render import render_json, render_table, write_contact_sheet, write_html

    if not queries and not ids:
        _fail("give at least one query image, or --id N")
    for query in queries:
        if not os.path.isfile(query):
            _fail(f"query {query} is not a file")

    def run() -> Any:
        with Collection.open(index_dir, device=device, on_notice=_notice) as collection:
            results = collection.search_ids(list(ids), k, nprobe, ef) if ids else []
            if queries:
                results += collection.search(list(queries), k, nprobe, ef)
            return results

    results = _run(run)
    click.echo(render_json(results) if as_json else render_table(results), nl=not as_json)
    if sheet:
        _run(lambda: write_contact_sheet(results, sheet))
        click.echo(f"contact sheet: {sheet}", err=True)
    if html_out:
        _run(lambda: write_html(results, html_out))
        click.echo(f"results page: {html_out}", err=True)


@main.command()
@_index_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(index_dir: str, as_json: bool) -> None:
    """Counts, skipped files with reasons, embedder, index kind and sizes."""
    from .collection import Collection
    from .render import printable

    def read() -> Any:
        with Collection.open(index_dir, on_notice=_notice) as collection:
            return collection.info()

    details = _run(read)
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
        "on disk:       " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in details.bytes_on_disk.items())
    )
    for path, reason in details.skipped_files:
        click.echo(f"skipped:       {printable(path)}: {reason}")


@main.command()
def models() -> None:
    """List the embedders lookalike knows."""
    from .embedders import embedder_names, get_embedder_spec

    for name in embedder_names():
        spec = get_embedder_spec(name)
        click.echo(f"{name:20} {spec.dim:5}-d  {spec.description}")


@main.command()
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

    from .collection import Collection
    from .demo import make_query, make_sample_collection
    from .render import render_table, write_contact_sheet, write_html

    base = Path(folder)
    progress = _Progress(not quiet)

    def run() -> Any:
        photos = base / "photos"
        written = make_sample_collection(photos)
        click.echo(f"sample collection: {len(written)} images in {photos}")
        query = make_query(base / "queries")
        with Collection.create(base / "index", on_notice=_notice) as collection:
            report = collection.add_folder(photos, on_progress=progress)
            progress.close()
            click.echo(report.summary())
            return collection.search([str(query)], k=8)

    results = _run(run)
    write_contact_sheet(results, base / "results.png")
    write_html(results, base / "results.html")
    click.echo(render_table(results), nl=False)
    click.echo(f"contact sheet: {base / 'results.png'}")
    click.echo(f"results page:  {base / 'results.html'}")


@main.command()
@_index_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--token",
    envvar="LOOKALIKE_TOKEN",
    help="Require 'Authorization: Bearer T' (or ?token=T) on every /api call; also from $LOOKALIKE_TOKEN.",
)
def serve(index_dir: str, host: str, port: int, token: str | None) -> None:
    """Serve the web page and the HTTP API for an index (http://HOST:PORT/, API docs at /docs)."""
    import importlib.util
    import ipaddress

    if any(importlib.util.find_spec(name) is None for name in ("fastapi", "uvicorn")) or not (
        importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")
    ):
        _fail("the web server needs FastAPI and uvicorn: pip install 'lookalike[server]'")
    token = token or None
    bare_host = host.strip("[]")
    try:
        loopback = ipaddress.ip_address(bare_host).is_loopback
    except ValueError:
        loopback = bare_host.lower() == "localhost"
    if not loopback and token is None:
        _fail(
            f"--host {host} lets other machines reach this index: give --token T (or set LOOKALIKE_TOKEN), "
            "or serve on 127.0.0.1"
        )
    wildcard = bare_host in ("0.0.0.0", "::")
    import uvicorn

    from .server import LOCAL_HOSTS, create_app

    # Requests must name this server in their Host header (DNS rebinding). A wildcard address can be
    # reached under any name; there the token, which a wildcard bind requires, is the guard.
    allowed_hosts = ("*",) if wildcard else (*LOCAL_HOSTS, bare_host)
    app = _run(lambda: create_app(index_dir, token=token, allowed_hosts=allowed_hosts))
    click.echo(f"loading the index and the model from {index_dir} ...", err=True)
    _run(app.state.service.warm)
    shown = f"[{bare_host}]" if ":" in bare_host else bare_host
    suffix = "?token=<your token>" if token else ""
    click.echo(f"serving {index_dir} at http://{shown}:{port}/{suffix} (API docs at /docs); Ctrl-C stops", err=True)
    uvicorn.run(app, host=bare_host, port=port, log_level="warning")


def _parse_bytes(text: str | None) -> int | None:
    """'2GB', '512MB', '1.5GiB', '1000000' -> bytes (kB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024)."""
    import re

    if text is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)b?\s*", text, re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        _fail(f"--max-memory wants a size such as 2GB, 512MB or 1.5GiB, not {text!r}", 2)
    number, unit, binary = float(match.group(1)), match.group(2).lower(), bool(match.group(3))
    power = " kmgt".index(unit) if unit else 0
    return int(number * (1024 if binary else 1000) ** power)


@main.command()
@_index_option
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
    from .collection import Collection
    from .tune import tune_collection, write_plot

    def run() -> Any:
        with Collection.open(index_dir, on_notice=_notice) as collection:
            return tune_collection(collection, target_recall, k, queries, seed, store=not dry_run)

    result = _run(run)
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
        _run(lambda: write_plot(result, plot))
        click.echo(f"plot: {plot}", err=True)
    chosen = result.chosen
    kept = "kept as the default for later searches" if result.stored else "not stored (--dry-run)"
    if result.met:
        click.echo(
            f"chosen: {chosen.label()} (recall@{result.k} {chosen.recall:.4f} >= {target_recall}, "
            f"p50 {chosen.p50_ms:.3f} ms): {kept}"
        )
        return
    _fail(
        f"no setting reaches recall@{result.k} {target_recall}; best is {chosen.label()} "
        f"(recall {chosen.recall:.4f}), {kept}: rebuild with a more exact kind (e.g. --kind flat or ivf)"
    )


@main.command()
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
    from .index import estimate_plan, plan_auto

    if (index_dir is None) == (vectors is None):
        _fail("give either --index DIR or --vectors N (with --dim D)", 2)
    budget = _parse_bytes(max_memory)
    current = None
    if index_dir is not None:
        from .collection import Collection

        def read() -> Any:
            with Collection.open(index_dir, on_notice=_notice) as collection:
                return collection.catalog.count_embeddings(), collection.dim, collection.metric, collection.info()

        vectors, dim, metric, details = _run(read)
        current = details.index_factory if details.index_vectors else None
    dim = dim or 1280
    metric = metric or "cosine"

    def make() -> Any:
        chosen = plan_auto(vectors, dim, metric, max_memory=budget, target_recall=target_recall)
        return chosen, estimate_plan(chosen, vectors, dim)

    chosen, estimate = _run(make)
    if as_json:
        data = {"vectors": vectors, "dim": dim, "plan": chosen.to_dict(), "estimate": estimate.to_dict()}
        click.echo(json.dumps({**data, "current_factory": current}, indent=2))
        return
    click.echo(f"vectors:          {vectors} x {dim}-d ({metric})")
    click.echo(f"factory:          {chosen.factory} ({chosen.kind})")
    click.echo(
        f"memory:           ~{_size(estimate.memory_bytes)} ({estimate.bytes_per_vector:.0f} B/vector x N + "
        f"{_size(estimate.overhead_bytes)})" + (f", budget {_size(budget)}" if budget else "")
    )
    click.echo(f"training set:     {estimate.train_size} vectors" if estimate.train_size else "training set:     none")
    click.echo(f"build time:       ~{_duration(estimate.build_seconds)} (rough, 2-core CPU)")
    click.echo(f"recall ceiling:   ~{estimate.recall_ceiling:.2f} recall@10 (what its vector codes allow)")
    click.echo(f"why:              {chosen.reason}")
    if current is not None:
        click.echo(f"current index:    {current}")


def _size(value: float | None) -> str:
    value = float(value or 0)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    main()
