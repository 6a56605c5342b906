"""`lookalike index` and `lookalike reindex`: build and rebuild a collection."""

from __future__ import annotations

import os
from typing import Any

import click

from .common import (
    MAX_SHOWN_SKIPS,
    Progress,
    collect_options,
    fail,
    index_option,
    index_options,
    max_megapixels_option,
    notice,
    run,
)


@click.command()
@click.argument("photo_dir", type=click.Path(file_okay=False))
@index_option
@click.option("--kind", help="flat, ivf, ivfpq, hnsw, auto (default) or any Faiss index_factory string.")
@click.option("--model", help="Embedder for a new index (default efficientnet-lite0; see 'lookalike models').")
@click.option("--metric", type=click.Choice(["cosine", "l2"]), help="Similarity for a new index (default cosine).")
@index_options
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the CNN runs. auto: cuda when a CUDA build of torch sees an NVIDIA GPU, else cpu. On cuda the "
    "model runs in fp16 when it agrees with fp32 on probe photos (cosine >= 0.999), else in fp32.",
)
@click.option("--workers", type=click.IntRange(1), help="Decoding threads or processes (default: one per core).")
@click.option(
    "--decode-in",
    type=click.Choice(["threads", "processes"]),
    default="threads",
    show_default=True,
    help="Decode in threads of this process, or in worker processes (for many cores).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Images per model run.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@max_megapixels_option
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Decode and embed on this Ray cluster (auto, HOST:PORT, ray://HOST:PORT); every node must read "
    "PHOTO_DIR under the same path. Needs lookalike[ray].",
)
@click.option(
    "--shard-size",
    type=click.IntRange(1),
    help="With --ray: files per task (default 256; 1,024 with --device cuda).",
)
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
    decode_in: str,
    batch_size: int,
    quiet: bool,
    max_megapixels: float | None,
    ray_address: str | None,
    shard_size: int | None,
) -> None:
    """Index every image under PHOTO_DIR (again: only new or changed files are embedded)."""
    from ..collection import Collection

    if not os.path.isdir(photo_dir):
        fail(f"{photo_dir} is not a folder: give the folder of photos to index")
    if shard_size is not None and ray_address is None:
        fail("--shard-size needs --ray ADDRESS")
    options = collect_options(nlist, pq_m, nbits, hnsw_m, ef_construction)
    progress = Progress(not quiet)
    skipped: list[tuple[str, str]] = []

    def build() -> Any:
        with Collection.create(index_dir, model=model, metric=metric, device=device, on_notice=notice) as collection:
            collection.max_megapixels = max_megapixels
            report = collection.add_folder(
                photo_dir,
                kind=kind,
                options=options or None,
                on_progress=progress,
                on_skip=lambda path, reason: skipped.append((path, reason)),
                workers=workers,
                decode_in=decode_in,
                batch_size=batch_size,
                ray_address=ray_address,
                shard_size=shard_size,
            )
            return report, collection.current_plan()

    try:
        report, plan = run(build)
    finally:
        progress.close()
    if quiet:
        return
    from ..render import printable

    for path, reason in report.skipped[:MAX_SHOWN_SKIPS]:
        click.echo(f"skipped {printable(path)}: {reason}", err=True)
    if len(report.skipped) > MAX_SHOWN_SKIPS:
        click.echo(
            f"... and {len(report.skipped) - MAX_SHOWN_SKIPS} more: see 'lookalike info --index {index_dir}'", err=True
        )
    click.echo(report.summary())
    click.echo(f"index: {plan.factory} ({plan.kind}; {plan.reason})")


@click.command()
@index_option
@click.option("--kind", required=True, help="flat, ivf, ivfpq, hnsw, auto or any Faiss index_factory string.")
@click.option("--metric", type=click.Choice(["cosine", "l2"]), help="Change the similarity measure.")
@index_options
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Add the vectors on this Ray cluster (auto, HOST:PORT, ray://HOST:PORT), in shards merged here; "
    "IVF kinds only. Needs lookalike[ray].",
)
@click.option(
    "--shard-size",
    type=click.IntRange(1),
    help="With --ray or --on-disk: vectors per shard (default 50000).",
)
@click.option(
    "--on-disk/--in-memory",
    "on_disk",
    default=None,
    help="IVF kinds: merge the inverted lists into a data file beside index.faiss that search memory-maps, "
    "holding one shard in memory at a time (--in-memory: back into index.faiss). Default: as the index is now.",
)
def reindex(
    index_dir: str,
    kind: str,
    metric: str | None,
    nlist: int | None,
    pq_m: int | None,
    nbits: int | None,
    hnsw_m: int | None,
    ef_construction: int | None,
    ray_address: str | None,
    shard_size: int | None,
    on_disk: bool | None,
) -> None:
    """Rebuild the Faiss index from the stored embeddings (the CNN does not run)."""
    from ..collection import Collection

    options = collect_options(nlist, pq_m, nbits, hnsw_m, ef_construction)
    if shard_size is not None and ray_address is None and not on_disk:
        fail("--shard-size needs --ray ADDRESS or --on-disk")

    def rebuild() -> Any:
        with Collection.open(index_dir, on_notice=notice) as collection:
            plan = collection.reindex(
                kind, metric, options or None, ray_address=ray_address, shard_size=shard_size, on_disk=on_disk
            )
            return plan, collection.info()

    plan, info = run(rebuild)
    click.echo(f"rebuilt: {plan.factory} ({plan.kind}; {plan.reason}) with {info.index_vectors} vectors")
