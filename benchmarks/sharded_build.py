"""An IVF index built in shards and merged against the same index built in one process, at 1M vectors.

    python benchmarks/sharded_build.py                       # 1,000,000 vectors, 8 shards; writes docs/benchmarks.md
    python benchmarks/sharded_build.py --vectors 200000 --no-write   # a quick look

One trained index (the quantizer and the SQ8 codebook trained once on a sample) is filled twice with the same
seeded vectors: once by one process adding everything, once as --shards shards, each added to its own copy of the
trained index (as `lookalike reindex --ray` has the cluster's workers do, here one after another in this process)
and merged into one. Both answer the same queries at each nprobe; recall@10 is against exact search. The vectors
are generated chunk by chunk, so no more than one chunk of float32 vectors is held at a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs import machine_description, write_section  # noqa: E402
from lookalike.index import VectorIndex  # noqa: E402
from lookalike.sharded_build import SHARD_VECTORS, add_shard, merge_shard, trained_copy  # noqa: E402

DIM = 1280
CHUNK = 100_000
K = 10
NPROBES = (1, 4, 16, 64)


def chunk_vectors(start: int, count: int, centres: np.ndarray) -> np.ndarray:
    """Seeded unit vectors `start`..`start+count` around the mixture's centres (one generator per chunk)."""
    rng = np.random.default_rng(1338 + start)
    picks = rng.integers(0, len(centres), count)
    vectors = centres[picks] + 0.02 * rng.standard_normal((count, DIM), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def vector_range(first: int, end: int, centres: np.ndarray) -> np.ndarray:
    """Vectors `first`..`end`, the same as `chunks` gives, whatever the boundaries."""
    parts = []
    for start in range(first - first % CHUNK, end, CHUNK):
        vectors = chunk_vectors(start, CHUNK, centres)
        parts.append(vectors[max(first - start, 0) : end - start])
    return np.vstack(parts)


def chunks(total: int, centres: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, total, CHUNK):
        count = min(CHUNK, total - start)
        yield np.arange(start, start + count, dtype=np.int64), chunk_vectors(start, count, centres)


def exact_top_k(queries: np.ndarray, total: int, centres: np.ndarray) -> np.ndarray:
    """The exact k nearest ids of each query, chunk by chunk."""
    best_scores = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), K), -1, dtype=np.int64)
    for ids, vectors in chunks(total, centres):
        flat = faiss.IndexFlatIP(DIM)
        flat.add(vectors)
        scores, rows = flat.search(queries, K)
        merged_scores = np.hstack([best_scores, scores])
        merged_ids = np.hstack([best_ids, ids[rows]])
        order = np.argsort(-merged_scores, axis=1)[:, :K]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_ids = np.take_along_axis(merged_ids, order, axis=1)
    return best_ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--factory", default="IVF1024_HNSW32,SQ8")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    centres = np.random.default_rng(7).standard_normal((4096, DIM), dtype=np.float32) / np.sqrt(DIM)  # norm ~1
    queries = chunk_vectors(10**9, args.queries, centres)
    started = time.perf_counter()
    empty = VectorIndex(faiss.index_factory(DIM, args.factory, faiss.METRIC_INNER_PRODUCT), "cosine")
    empty.train(chunk_vectors(2 * 10**9, 65_536, centres))
    train_s = time.perf_counter() - started
    trained = trained_copy(empty)

    single = VectorIndex(faiss.deserialize_index(trained), "cosine")
    single_s = 0.0
    for ids, vectors in chunks(args.vectors, centres):
        started = time.perf_counter()
        single.add(ids, vectors)
        single_s += time.perf_counter() - started

    merged = VectorIndex(faiss.deserialize_index(trained), "cosine")
    per_shard = -(-args.vectors // args.shards)
    shard_times, shard_bytes, merge_s = [], 0, 0.0
    for first in range(0, args.vectors, per_shard):
        ids = np.arange(first, min(first + per_shard, args.vectors), dtype=np.int64)
        vectors = vector_range(first, int(ids[-1]) + 1, centres)
        started = time.perf_counter()
        shard = add_shard(trained, "cosine", ids, vectors)
        shard_times.append(time.perf_counter() - started)
        shard_bytes += shard.nbytes
        started = time.perf_counter()
        merge_shard(merged, shard)
        merge_s += time.perf_counter() - started

    truth = exact_top_k(queries, args.vectors, centres)
    rows = []
    for nprobe in NPROBES:
        one_scores, one_ids = single.search(queries, K, nprobe=nprobe)
        scores, found = merged.search(queries, K, nprobe=nprobe)
        rows.append(
            f"| {nprobe} | {recall(one_ids, truth):.4f} | {recall(found, truth):.4f} | "
            f"{float(np.abs(scores - one_scores).max()):.1e} | {float((found == one_ids).mean()):.4f} |"
        )
    merged_bytes = faiss.serialize_index(merged.index).nbytes
    threads = faiss.omp_get_max_threads()
    hours_100m = 1e8 / (args.vectors / single_s) / 3600
    body = f"""Command: `python benchmarks/sharded_build.py --vectors {args.vectors} --shards {args.shards}`

Machine: {machine_description()}; shared with other jobs while it ran.

{args.vectors:,} seeded unit vectors of {DIM} dimensions (a mixture of 4,096 clusters; these test the merge, not
compression, so their spectrum does not matter here), `{args.factory}` trained once on 65,536 of them
({train_s:.0f} s). The same trained index filled by one process, and as {args.shards} shards each added to its own
copy of it (as the cluster's workers do for `lookalike reindex --ray`; here one after another) then merged.
{args.queries:,} queries; recall@10 against exact search.

| nprobe | recall@10, one process | recall@10, {args.shards} shards merged | largest score gap | same ids, same places |
| ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

- Adding (generating the vectors left out): one process {single_s:.0f} s, {args.vectors / single_s:,.0f} vectors/s on
  {threads} threads; a shard of {per_shard:,} took {min(shard_times):.1f}-{max(shard_times):.1f} s; merging all
  {args.shards} shards into the trained index took {merge_s:.1f} s on the driver. With a worker of this machine's
  speed per shard, the build's wall time would be the slowest shard plus the merge, {max(shard_times) + merge_s:.0f} s,
  against {single_s:.0f} s in one process.
- Bytes: the shards sent back {shard_bytes / 2**20:,.0f} MiB in all; the merged index is {merged_bytes / 2**20:,.0f} MiB
  ({merged_bytes / args.vectors:,.0f} B/vector): what the driver holds in memory while it merges.
- 100,000,000 vectors of this kind, on paper from these figures: adding takes {hours_100m:.1f} hours
  of a machine like this one, divided by the number of such workers; the merged index is
  {merged_bytes / args.vectors * 1e8 / 2**30:,.0f} GiB, held by the driver while merging (in-memory merge) and written
  once; the shards in flight hold {SHARD_VECTORS:,} vectors each ({SHARD_VECTORS * DIM * 4 / 2**20:,.0f} MiB of
  float32 sent, about {SHARD_VECTORS * merged_bytes / args.vectors / 2**20:,.0f} MiB returned).
"""
    print(body)
    if not args.no_write:
        write_section("Building the index in shards", body)


if __name__ == "__main__":
    main()
