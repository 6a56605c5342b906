"""Search at scale within a memory budget: 1M vectors in <= 1 GB at recall@10 >= 0.90.

    python benchmarks/scale_budget.py --size 1000000

The focused part of benchmarks/scale.py: the same seeded vectors (the generator fitted to tens of thousands
of real embeddings, see benchmarks/scale_real.py), the same shared coarse quantizer and measurements, but
only the compressed kinds whose index fits the budget - PCA + SQ8/SQ6, SQ6, PQ - each with and without an
exact re-ranking step. Re-ranking searches k x factor candidates in the compressed index, then reads those
candidates' float vectors from a memory-mapped file (the way a collection can read them from its catalog)
and keeps the k best by exact inner product. The float vectors stay on disk: they are counted as disk, not
RAM, and re-ranking latency is measured both with the file in the page cache (warm) and evicted from it
(cold: posix_fadvise DONTNEED before each query). Results go to --json and replace the budget subsection of
the "## Search at scale" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # noqa: E402 - the benchmark's own helpers, next to this file
import scale_real  # noqa: E402

BUDGET = 1e9
NPROBES = (8, 16, 32, 64, 128)
FACTORS = (4, 10)  # re-ranking: candidates fetched per result wanted


class ExactVectors:
    """Float vectors in a memory-mapped .npy file, read by id to re-rank an index's candidates."""

    def __init__(self, path: Path, xb: np.ndarray) -> None:
        if not path.is_file() or path.stat().st_size < xb.nbytes:
            with open(path, "wb") as handle:
                np.save(handle, xb)
                handle.flush()
                os.fsync(handle.fileno())  # dirty pages cannot be evicted: write them out now
        self.path = path
        self.vectors = np.load(path, mmap_mode="r")

    def evict(self) -> None:
        """Drop the file from this process's mapping and from the page cache: the next reads go to the disk."""
        self.vectors._mmap.madvise(mmap.MADV_DONTNEED)  # mapped pages are never dropped from the cache
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
        """The k best of each row of candidate ids by exact inner product (ids; -1 where too few)."""
        out = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, ids) in enumerate(zip(queries, candidates)):
            ids = np.unique(ids[ids >= 0])  # sorted: reads go through the file in order
            scores = self.vectors[ids] @ query
            best = np.argsort(-scores, kind="stable")[:k]
            out[row, : len(best)] = ids[best]
        return out


def sweep(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, args, exact: ExactVectors) -> list[dict]:
    """Recall and single-query latency at each nprobe, without and with re-ranking (warm and cold)."""
    from lookalike.index import find_ivf

    points = []

    ivf = find_ivf(index)
    lat_q = queries[: args.latency_queries]
    for nprobe in NPROBES:
        ivf.nprobe = nprobe
        for factor in (1, *FACTORS):
            fetch = 10 * factor
            _, found = index.search(queries, fetch)
            if factor > 1:
                found = exact.rerank(queries, found, 10)
            r1, r10 = scale.recalls(found[:, :10], truth)

            def one(q: np.ndarray, fetch: int = fetch, factor: int = factor) -> None:
                _, cand = index.search(q, fetch)
                if factor > 1:
                    exact.rerank(q, cand, 10)

            lat = scale.single_latencies(one, lat_q)
            point = {
                "nprobe": nprobe,
                "factor": factor,
                "recall1": r1,
                "recall10": r10,
                "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)),
            }
            if factor > 1:
                cold = []
                with scale.one_thread():
                    for q in lat_q[: args.cold_queries]:
                        exact.evict()
                        start = time.perf_counter_ns()
                        one(q[None])
                        cold.append((time.perf_counter_ns() - start) / 1e6)
                point["cold_p50_ms"] = float(np.percentile(cold, 50))
            points.append(point)
            scale.log(
                f"    nprobe={nprobe} x{factor}: recall@10 {r10:.3f} p50 {point['p50_ms']:.2f} ms"
                + (f" (cold {point['cold_p50_ms']:.2f} ms)" if factor > 1 else "")
            )
        if points[-1]["p50_ms"] > 30:
            break
    return points


def kinds(nlist: int) -> list[tuple[str, str, str]]:
    """(name, factory, metric) of each kind measured. PCA centres the vectors, which changes inner products
    by a term that depends on the vector (q.x - m.x + ...), so PCA kinds rank by L2 distance: on unit vectors
    the same order as the cosine, and translation-invariant."""
    quantizer = f"IVF{nlist}_HNSW32"
    return [
        ("PCA256-IVF-SQ8", f"PCAR256,{quantizer},SQ8", "l2"),
        ("IVF-SQ6", f"{quantizer},SQ6", "ip"),
        ("PCA512-IVF-SQ8", f"PCAR512,{quantizer},SQ8", "l2"),
        ("PCA256-IVF-SQ8-ip", f"PCAR256,{quantizer},SQ8", "ip"),
        ("IVF-PQ128", f"{quantizer},PQ128", "ip"),
    ]


def run(args: argparse.Namespace) -> dict:
    n = args.size
    real = np.unique(scale_real.real_embeddings(args.workdir, args.real), axis=0)
    generator = scale.Generator.fit(real, clusters=max(8, len(real) // 40), rank=24)
    data = {"machine": scale.machine(), "real_count": len(real), "generator": generator.description}
    data["structure"] = scale.structure_check(real, generator, seed=11)
    data["spectrum"] = {"real": scale.spectrum(real), "generated": scale.spectrum(generator.sample(len(real), 12))}
    previous = generator.isotropic()
    data["spectrum"]["isotropic"] = scale.spectrum(previous.sample(len(real), 12))
    data["structure"]["isotropic"] = scale.structure_check(real, previous, seed=11)["generated"]
    scale.log(f"spectrum {data['spectrum']}; structure {data['structure']}")
    flat = faiss.IndexFlatIP(scale.DIM)
    for c, s in enumerate(range(0, n, 100_000)):
        flat.add(generator.sample(min(100_000, n - s), seed=1000 + c))
    xb = faiss.rev_swig_ptr(flat.get_xb(), n * scale.DIM).reshape(n, scale.DIM)
    queries = generator.sample(args.queries, seed=99)
    _, truth = flat.search(queries, 10)
    exact = ExactVectors(args.workdir / f"vectors-{n}.npy", xb)
    rng = np.random.default_rng(5)
    sample = np.ascontiguousarray(xb[np.sort(rng.choice(n, size=min(n, 200_000), replace=False))])
    from lookalike.planner import auto_nlist

    nlist = auto_nlist(n)
    shared = scale.Shared(xb, nlist, sample)
    scale.log(f"{n} vectors; shared k-means {shared.train_s:.0f} s, assignment {shared.assign_s:.0f} s")
    data.update(size=n, queries=args.queries, latency_queries=args.latency_queries, nlist=nlist, results=[])
    wanted = set(args.kinds.split(",")) if args.kinds else None
    for name, factory, metric in kinds(nlist):
        if wanted and name not in wanted:
            continue
        scale.log(f"  {name}: {factory} ({metric})")
        index, train_s, add_s = scale.build(factory, xb, sample, shared, metric=metric)
        points = sweep(index, queries, truth, args, exact)
        disk, ram, _, _ = scale.file_stats(index, args.workdir)
        data["results"].append(
            {
                "name": name,
                "factory": factory,
                "metric": metric,
                "build_s": shared.train_s + shared.assign_s + train_s + add_s,
                "ram_bytes": ram,
                "disk_bytes": disk,
                "points": points,
            }
        )
        args.json.write_text(json.dumps(data, indent=1))
        del index
        gc.collect()
    if args.catalog_rows:
        data["catalog"] = catalog_reads(xb[: args.catalog_rows], args)
        scale.log(f"  catalog reads: {data['catalog']}")
    data["machine"]["load_after"] = os.getloadavg()
    return data


def neighbour_distribution(args: argparse.Namespace) -> dict:
    """Percentiles of the cosine to the 1st and 10th neighbour: real vs generated, sets of the same size."""
    real = np.unique(scale_real.real_embeddings(args.workdir, args.real), axis=0)
    generator = scale.Generator.fit(real, clusters=max(8, len(real) // 40), rank=24)
    real = real[np.random.default_rng(11).permutation(len(real))]
    out = {}
    for name, vectors in (("real", real), ("generated", generator.sample(len(real), 11))):
        half = len(vectors) // 2
        index = faiss.IndexFlatIP(scale.DIM)
        index.add(vectors[:half])
        scores, _ = index.search(vectors[half:], 10)
        out[name] = {
            f"{rank}": [float(np.percentile(scores[:, rank - 1], q)) for q in (10, 50, 90)] for rank in (1, 10)
        }
    return out


def catalog_reads(vectors: np.ndarray, args: argparse.Namespace) -> dict:
    """Time lookalike's own re-ranking (lookalike.rerank, reading the catalog's SQLite rows) per query."""
    import shutil

    from lookalike import Collection
    from lookalike.catalog import NewImage
    from lookalike.rerank import rerank

    folder = args.workdir / "rerank-collection"
    shutil.rmtree(folder, ignore_errors=True)
    out = {"rows": len(vectors)}
    with Collection.create(folder) as collection:
        for s in range(0, len(vectors), 20_000):
            collection.catalog.add_indexed(
                [
                    NewImage(f"/p/{i:08}.jpg", 1, 1, f"h{i}", 1, 1, vectors[i])
                    for i in range(s, min(len(vectors), s + 20_000))
                ]
            )
    # Timed on a reopened collection (its write-ahead log checkpointed) whose files were read once, so the
    # catalog is in the page cache: "warm", like a served collection. Factors take turns query by query.
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(1 << 24):
                    pass
    rng = np.random.default_rng(3)
    queries = vectors[rng.choice(len(vectors), 300)]
    times: dict[int, list[float]] = {factor: [] for factor in FACTORS}
    with Collection.open(folder) as collection:
        for q in queries:
            for factor in FACTORS:
                candidates = rng.choice(len(vectors), 10 * factor, replace=False) + 1  # catalog ids start at 1
                start = time.perf_counter_ns()
                rerank(collection.catalog, q[None], candidates[None], 10)
                times[factor].append((time.perf_counter_ns() - start) / 1e6)
    for factor in FACTORS:
        out[f"x{factor}_p50_ms"] = float(np.percentile(times[factor], 50))
        out[f"x{factor}_p99_ms"] = float(np.percentile(times[factor], 99))
    shutil.rmtree(folder, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--real", type=int, default=24_000, help="Real embeddings to fit the generator to.")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--cold-queries", type=int, default=50)
    parser.add_argument("--kinds", help="Only these kinds (comma-separated names).")
    parser.add_argument(
        "--catalog-rows", type=int, default=200_000, help="Rows of the catalog lookalike's re-ranking is timed on."
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lookalike-scale")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--doc", type=Path, default=scale.HERE.parent / "docs" / "benchmarks.md")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--neighbours-only", action="store_true", help="Only compare neighbour similarities, real vs generated."
    )
    parser.add_argument(
        "--catalog-only",
        action="store_true",
        help="Only time lookalike's re-ranking from a catalog of --catalog-rows random unit vectors.",
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.json = args.json or args.workdir / "scale-budget.json"
    catalog_json = args.json.with_name(args.json.stem + "-catalog.json")
    if args.catalog_only:  # lookalike's own re-ranking path, timed apart from (and while) the index kinds run
        rng = np.random.default_rng(4)
        vectors = rng.standard_normal((args.catalog_rows, scale.DIM), dtype=np.float32)
        faiss.normalize_L2(vectors)
        catalog_json.write_text(json.dumps(catalog_reads(vectors, args), indent=1))
        return
    neighbours_json = args.json.with_name(args.json.stem + "-neighbours.json")
    if args.neighbours_only:
        neighbours_json.write_text(json.dumps(neighbour_distribution(args), indent=1))
        return
    data = json.loads(args.json.read_text()) if args.report_only else run(args)
    for key, path in (("catalog", catalog_json), ("neighbours", neighbours_json)):
        if path.is_file() and key not in data:
            data[key] = json.loads(path.read_text())
    args.json.write_text(json.dumps(data, indent=1))
    import scale_budget_report

    scale.write_section(args.doc, scale_budget_report.section(data, args.doc))
    scale.log(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
