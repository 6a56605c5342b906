"""An IVF index built in shards and merged against the same index built in one process, at 1M vectors.

    python benchmarks/sharded_build.py                       # 1,000,000 vectors, 8 shards; writes docs/benchmarks.md
    python benchmarks/sharded_build.py --vectors 200000 --no-write   # a quick look

One trained index (the quantizer and the SQ8 codebook trained once on a sample) is filled twice with the same
seeded vectors: once by one process adding everything, once as --shards shards, each added to its own copy of the
trained index (as `lookalike reindex --ray` has the cluster's workers do, here one after another in this process)
and merged into one. Both answer the same queries at each nprobe; recall@10 is against exact search. The vectors
are generated chunk by chunk, so no more than one chunk of float32 vectors is held at a time.

Then the merge itself, in memory against on disk (`lookalike reindex --on-disk`), each in a process of its own
so that its peak memory is its own: the built shards are kept as files and handed to each merging process one
at a time, as a cluster's results arrive. In memory, each shard is merged into the trained index, which is then
saved; on disk, each shard is written to a scratch file and the files are merged into a data file beside
index.faiss (`sharded_build.merge_on_disk`). Each process then loads what it wrote as search does (read whole,
or memory-mapped) and times single queries; the answer sets are compared. A third process merges nothing: it maps
the shard files and searches them side by side (Faiss's IndexShards), the alternative to one merged index.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs import machine_description, write_section  # noqa: E402
from lookalike.index import MMAP_FLAGS, VectorIndex  # noqa: E402
from lookalike.index_store import load_verified  # noqa: E402
from lookalike.settings import IndexState  # noqa: E402
from lookalike.sharded_build import (  # noqa: E402
    SHARD_VECTORS,
    add_shard,
    merge_in_memory,
    merge_on_disk,
    merge_shard,
    trained_copy,
)
from lookalike.storage import file_fingerprint  # noqa: E402

DIM = 1280
CHUNK = 100_000
K = 10
NPROBES = (1, 4, 16, 64)
WAYS = ("memory", "disk", "shards")  # merged in memory, merged on disk, not merged (IndexShards)


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


class ShardFiles:
    """A shard adder whose shards were built earlier: each read from its file when asked, one at a time."""

    where = "from files"
    shard_vectors = 0

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def added(self, trained: np.ndarray, metric: str, shards: Iterator) -> Iterator[np.ndarray]:
        for file in self.files:
            yield np.fromfile(file, dtype=np.uint8)


class PeakAnonymous:
    """Samples the process's anonymous resident memory (RssAnon: its own, not file pages) every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, status_kib("RssAnon"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, status_kib("RssAnon"))


def status_kib(field: str) -> int:
    """A field of /proc/self/status, in KiB (VmHWM: peak resident memory, file pages included)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def merge_child(way: str, work: Path) -> None:
    """Run in a process of its own: merge the shard files `way` ("memory" or "disk"), load, search; report JSON.

    "shards" merges nothing: the shard files are mapped and searched side by side (Faiss's IndexShards).
    """
    shards = sorted(work.glob("shard-*.faiss"))
    queries = np.load(work / "queries.npy")
    out = work / way
    out.mkdir()
    report = {"before_mib": status_kib("VmRSS") / 1024}
    if way == "shards":
        started = time.perf_counter()
        search = shards_searcher(shards)
        report["load_s"] = time.perf_counter() - started
    else:
        path = out / "index.faiss"
        state = merge_to(way, shards, work / "trained.faiss", path, report)
        started = time.perf_counter()
        index = load_verified(path, state, "cosine", mmap=way == "disk")
        report["load_s"] = time.perf_counter() - started

        def search(batch: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
            return index.search(batch, K, nprobe=nprobe)

    answers, latency = {}, {}
    for nprobe in NPROBES:
        scores, ids = search(queries, nprobe)
        answers[f"scores{nprobe}"], answers[f"ids{nprobe}"] = scores, ids
    faiss.omp_set_num_threads(1)  # one query at a time on one thread, as a server request searches
    for nprobe in NPROBES:
        times = []
        for query in queries[:200]:
            started = time.perf_counter()
            search(query[None, :], nprobe)
            times.append(time.perf_counter() - started)
        latency[nprobe] = [float(np.median(times)) * 1e3, float(np.percentile(times, 95)) * 1e3]
    np.savez(out / "answers.npz", **answers)
    report["files"] = {item.name: item.stat().st_size for item in out.iterdir() if item.name != "answers.npz"}
    report.update(search_rss_mib=status_kib("VmRSS") / 1024, search_anon_mib=status_kib("RssAnon") / 1024)
    report["latency"] = latency
    print(json.dumps(report))


def merge_to(way: str, shards: list[Path], trained: Path, path: Path, report: dict) -> IndexState:
    """Merge the shard files in memory then save, or on disk; note times and peak memory in `report`."""
    empty = VectorIndex(faiss.read_index(str(trained)), "cosine")
    sampler = PeakAnonymous()
    started = time.perf_counter()
    if way == "memory":
        merge_in_memory(empty, ShardFiles(shards), iter(()))
        report["merge_s"] = time.perf_counter() - started
        count, checksum = empty.count, empty.save(path)
    else:
        checksum, count, _ = merge_on_disk(empty, ShardFiles(shards), iter(()), path, lambda n: None)
        report["merge_s"] = time.perf_counter() - started
    report["total_s"] = time.perf_counter() - started
    report.update(peak_mib=status_kib("VmHWM") / 1024, peak_anon_mib=sampler.stop() / 1024)
    return IndexState(checksum, count, DIM, count - 1, **file_fingerprint(path))


def shards_searcher(shards: list[Path]):  # noqa: ANN201 - a search function
    """The shard files mapped and searched as one by IndexShards (each probes its own nprobe lists)."""
    parts = [faiss.read_index(str(file), MMAP_FLAGS) for file in shards]
    together = faiss.IndexShards(DIM, False, False)  # not threaded; the ids are the catalog's, kept as they are
    for part in parts:
        together.add_shard(part)

    def search(batch: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        for part in parts:
            faiss.extract_index_ivf(part).nprobe = nprobe
        return together.search(batch, K)

    search.parts = parts  # the shards must outlive IndexShards, which does not own them
    return search


def compare_merges(work: Path, truth: np.ndarray) -> str:
    """Merge the shard files in memory and on disk, and search them unmerged, each in a fresh process; markdown."""
    reports, answers = {}, {}
    for way in WAYS:
        child = [sys.executable, __file__, "--merge-child", way, "--work", str(work)]
        reports[way] = json.loads(subprocess.run(child, capture_output=True, text=True, check=True).stdout)
        answers[way] = np.load(work / way / "answers.npz")
    m, d, s = (reports[way] for way in WAYS)
    rows = []
    for nprobe in NPROBES:
        cells = [f"{recall(answers[way][f'ids{nprobe}'], truth):.4f}" for way in WAYS]
        for way in WAYS[1:]:
            same = float((answers["memory"][f"ids{nprobe}"] == answers[way][f"ids{nprobe}"]).mean())
            gap = float(np.abs(answers["memory"][f"scores{nprobe}"] - answers[way][f"scores{nprobe}"]).max())
            cells.append(f"{same:.4f} ({gap:.0e})")
        cells += ["{:.2f} / {:.2f}".format(*reports[way]["latency"][str(nprobe)]) for way in WAYS]
        rows.append(f"| {nprobe} | " + " | ".join(cells) + " |")
    header = (
        "| nprobe | recall@10: in memory | on disk | shards | same ids as in memory (largest score gap): on disk "
        "| shards | ms per query, median / p95: in memory | on disk (mapped) | shards (mapped) |"
    )
    searching = [f"{r['search_rss_mib']:,.0f} / {r['search_anon_mib']:,.0f}" for r in (m, d, s)]
    sizes = ", ".join(f"{name} {size / 2**20:,.0f} MiB" for name, size in sorted(d["files"].items()))
    shards = len(list(work.glob("shard-*.faiss")))
    return f"""
Merging in memory against merging on disk (`lookalike reindex --on-disk`), each in a fresh process handed the same
{shards} built shards one at a time (as a cluster's results arrive), then loading what it wrote as search does and
answering the same queries; and, merging nothing, the {shards} shard files mapped and searched side by side
(Faiss's `IndexShards`, each shard probing its own nprobe lists):

| | in memory | on disk | {shards} shards, unmerged |
| --- | ---: | ---: | ---: |
| merge, seconds | {m["merge_s"]:.1f} (+{m["total_s"] - m["merge_s"]:.1f} to save) | {d["merge_s"]:.1f} (saved) | 0 |
| process memory before the merge, MiB | {m["before_mib"]:,.0f} | {d["before_mib"]:,.0f} | - |
| peak resident memory merging (VmHWM, file pages included), MiB | {m["peak_mib"]:,.0f} | {d["peak_mib"]:,.0f} | - |
| peak anonymous merging (RssAnon, 20 ms samples), MiB | {m["peak_anon_mib"]:,.0f} | {d["peak_anon_mib"]:,.0f} | - |
| load for search, seconds | {m["load_s"]:.2f} (read whole) | {d["load_s"]:.2f} (mapped) | {s["load_s"]:.2f} (mapped) |
| the searching process after its queries: resident / anonymous, MiB | {" | ".join(searching)} |

Files written on disk: {sizes} (in memory: index.faiss {m["files"]["index.faiss"] / 2**20:,.0f} MiB).

{header}
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

Latency is one query at a time on one thread (200 queries at each nprobe), with the files in the page cache (just
written): a cold cache reads each probed list from the disk once.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--factory", default="IVF1024_HNSW32,SQ8")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--work", help="a folder for the shard files and merged indexes (default: a temporary one)")
    parser.add_argument("--merge-child", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.merge_child:
        merge_child(args.merge_child, Path(args.work))
        return
    work = Path(tempfile.mkdtemp(prefix="sharded-build-", dir=args.work))
    try:
        body = build_and_compare(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(body)
    if not args.no_write:
        write_section("Building the index in shards", body)


def build_and_compare(args: argparse.Namespace, work: Path) -> str:
    """Build one index in one process and in shards, compare them, then compare merging in memory and on disk."""

    centres = np.random.default_rng(7).standard_normal((4096, DIM), dtype=np.float32) / np.sqrt(DIM)  # norm ~1
    queries = chunk_vectors(10**9, args.queries, centres)
    started = time.perf_counter()
    empty = VectorIndex(faiss.index_factory(DIM, args.factory, faiss.METRIC_INNER_PRODUCT), "cosine")
    empty.train(chunk_vectors(2 * 10**9, 65_536, centres))
    train_s = time.perf_counter() - started
    trained = trained_copy(empty)
    faiss.write_index(empty.index, str(work / "trained.faiss"))
    np.save(work / "queries.npy", queries)

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
        shard.tofile(work / f"shard-{first:012}.faiss")
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
    del single, merged
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
    return body + compare_merges(work, truth)


if __name__ == "__main__":
    main()
