"""Copy-detection benchmark: find the original of edited copies, with today's search and with each new piece.

    python benchmarks/copydetect.py                      # ~2,600 images, ~700 queries (about 15 min on 2 cores)
    python benchmarks/copydetect.py --quick              # ~800 images, ~240 queries (a few minutes)
    python benchmarks/copydetect.py --images 2600 --queries 700 --data /tmp/copydetect --write-docs
    python benchmarks/copydetect.py --one-search INDEX QUERY   # the full pipeline once (time it in a new process)

The data (photos, clip-art distractors, seeded mild/hard/no-original queries;
see copydetect_data.py and edits.py) is built at run time into --data and
reused while its settings match. Systems compared, on the same queries:
baseline (one squashed global vector, lookalike's search as it is), the
query-side views of lookalike.regions one piece at a time and together (fused
by max per collection image), and the views plus geometric verification of
the shortlist with lookalike.verify's calibrated copy score.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lookalike  # noqa: E402
from copydetect_data import build  # noqa: E402
from lookalike.embedders import load_embedder  # noqa: E402
from lookalike.regions import fuse_view_hits, propose_views, squash  # noqa: E402
from lookalike.verify import (  # noqa: E402
    COPY_THRESHOLD,
    STRONG_INLIERS,
    LocalFeatures,
    extract_features,
    pack_features,
    rerank,
    unpack_features,
    verify_shortlist,
)

K = 100  # neighbours per view
BACKGROUND = (10, 100)  # ranks of a view's own hits that measure its background (measured variant)
VARIANTS = {  # name -> view kinds used
    "baseline (squash)": None,
    "whole, padded": {"pad"},
    "whole, centre crop": {"centre"},
    "whole + turns + mirror": {"whole", "turn90", "turn180", "turn270", "mirror"},
    "whole + grid": {"whole", "grid2", "grid3"},
    "whole + rects": {"whole", "rect"},
    "all views but turns/mirror": {"whole", "grid2", "grid3", "rect"},
    "all views": {"whole", "turn90", "turn180", "turn270", "mirror", "grid2", "grid3", "rect"},
}


def aspect_views(picture: Image.Image, size: int) -> dict[str, np.ndarray]:
    """The two aspect-keeping alternatives to squashing, measured against it."""
    side = max(picture.size)
    padded = Image.new("RGB", (side, side), (0, 0, 0))
    padded.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
    return {"pad": squash(padded, size), "centre": np.asarray(ImageOps.fit(picture, (size, size)), dtype=np.uint8)}


def run_views(collection, embedder, query_path: str) -> dict:
    """Every view of one query, embedded and searched; per-stage timings."""
    started = time.perf_counter()
    picture = Image.open(query_path).convert("RGB")
    decoded = time.perf_counter()
    views = propose_views(picture, embedder.input_size)
    proposed = time.perf_counter()
    extra = aspect_views(picture, embedder.input_size)
    kinds = [v.kind for v in views] + list(extra)
    vectors = embedder.embed(np.stack([v.pixels for v in views] + list(extra.values())))
    embedded = time.perf_counter()
    results = collection.search_vectors(vectors, kinds, k=K)
    searched = time.perf_counter()
    ids = np.asarray([[h.id for h in r.hits] + [-1] * (K - len(r.hits)) for r in results])
    scores = np.asarray([[h.score for h in r.hits] + [0.0] * (K - len(r.hits)) for r in results], dtype=np.float32)
    paths = {h.id: h.path for r in results for h in r.hits}
    return {
        "kinds": kinds,
        "ids": ids,
        "scores": scores,
        "paths": paths,
        "picture": picture,
        "t": {
            "decode": decoded - started,
            "propose": proposed - decoded,
            "embed": embedded - proposed,
            "search": searched - embedded,
            "views": len(views),
        },
    }


def fused_ranking(run: dict, kinds: set[str], background: tuple[int, int] | None = None) -> list[tuple[str, float]]:
    rows = [i for i, kind in enumerate(run["kinds"]) if kind in kinds]
    fused = fuse_view_hits(run["ids"][rows], run["scores"][rows], background)
    return [(run["paths"][image_id], score) for image_id, score, _ in fused[:K]]


class FeatureStore:
    """Candidate features extracted from the files, cached across queries, with each file's extraction cost."""

    def __init__(self) -> None:
        self.features: dict[str, object] = {}
        self.seconds: dict[str, float] = {}
        self.packed: dict[str, bytes] = {}

    def get(self, path: str) -> LocalFeatures:
        if path not in self.features:
            started = time.perf_counter()
            self.features[path] = extract_features(Image.open(path).convert("RGB"))
            self.seconds[path] = time.perf_counter() - started
            self.packed[path] = pack_features(self.features[path])
        return self.features[path]


def verified_ranking(run: dict, ranking, store: FeatureStore, shortlist: int, strong: int) -> tuple[list, dict]:
    """Re-rank the shortlist by verified inliers; copy scores for all. Times both ways of getting candidate
    features: extracted from the files at query time, or unpacked from storage made at ingest."""
    reached: list[tuple[str, bool]] = []  # (path, already extracted by an earlier query)

    def candidate(position: int):
        path = ranking[position][0]
        reached.append((path, path in store.features))
        return store.get(path)

    started = time.perf_counter()
    checks = verify_shortlist(run["picture"], candidate, min(shortlist, len(ranking)), strong)
    spent = time.perf_counter() - started
    paid = sum(store.seconds[p] for p, cached in reached if not cached)
    unpaid = sum(store.seconds[p] for p, cached in reached if cached)
    unpack_started = time.perf_counter()
    for path, _ in reached:
        unpack_features(store.packed[path])
    unpack = time.perf_counter() - unpack_started
    order = rerank([score for _, score in ranking], checks)
    details = [(ranking[p][0], checks[p].inliers if p < len(checks) else 0, ranking[p][1]) for p in range(len(ranking))]
    timing = {
        "from_files": spent + unpaid,
        "candidate_features": paid + unpaid,
        "from_stored": spent - paid + unpack,
        "reached": len(reached),
        "details": details,
    }
    # Ties among saturated copy scores are broken by inliers, then similarity, for micro-AP's single ordering.
    tie = {p: 1e-4 * min(details[p][1], 1000) / 1000 + 1e-6 * details[p][2] for p in range(len(details))}
    return [(ranking[p][0], score + tie[p]) for p, score in order], timing


def baseline(collection, queries) -> tuple[list, list[float]]:
    rankings, seconds = [], []
    for query in queries:
        started = time.perf_counter()
        result = collection.search([query.path], k=K, mode="fast")[0]
        seconds.append(time.perf_counter() - started)
        rankings.append([(h.path, h.score) for h in result.hits])
    return rankings, seconds


def evaluate(args: argparse.Namespace) -> None:
    data = Path(args.data)
    collection_folder, queries = build(data, args.images, args.queries)
    files = sorted(collection_folder.iterdir())
    print(f"collection: {len(files)} images; queries: {len(queries)}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        index = Path(work) / "index"
        collection = lookalike.Collection.create(index)
        started = time.perf_counter()
        collection.add_folder(collection_folder)
        ingest_rate = len(files) / (time.perf_counter() - started)
        print(f"ingest: {ingest_rate:.1f} images/s", flush=True)
        embedder = load_embedder()
        base, base_seconds = baseline(collection, queries)
        runs = []
        for number, query in enumerate(queries):
            runs.append(run_views(collection, embedder, query.path))
            if number % 50 == 0:
                print(f"views {number}/{len(queries)}", flush=True)
        rankings = {
            name: base if kinds is None else [fused_ranking(r, kinds) for r in runs] for name, kinds in VARIANTS.items()
        }
        rankings["all views, background-normalised"] = [
            fused_ranking(r, VARIANTS["all views"], BACKGROUND) for r in runs
        ]
        store = FeatureStore()
        verified, verify_times = [], []
        for number, (run, ranking) in enumerate(zip(runs, rankings[args.verify_ranking])):
            ranked, timing = verified_ranking(run, ranking, store, args.shortlist, args.strong)
            verified.append(ranked)
            verify_times.append(timing)
            if number % 50 == 0:
                print(f"verify {number}/{len(queries)}", flush=True)
        rankings[f"{args.verify_ranking} + verify top {args.shortlist}"] = verified
        new_process = time_new_process(index, queries, args.shortlist, args.new_process_runs)
        collection.close()
    report(queries, rankings, runs, verify_times, base_seconds, store, ingest_rate, new_process, args)


def time_new_process(index: Path, queries, shortlist: int, runs: int, fast: bool = False) -> list[float]:
    """Wall time of `--one-search` in a fresh interpreter, imports and model load included (hard queries,
    spread over the families)."""
    hard = [q for q in queries if q.tier == "hard"]
    picks = hard[:: max(1, len(hard) // runs)][:runs] if runs else []
    seconds = []
    for query in picks:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--one-search", str(index), query.path, "--shortlist", str(shortlist)]
            + (["--fast"] if fast else []),
            check=True,
            capture_output=True,
            env={**os.environ},
        )
        seconds.append(time.perf_counter() - started)
    return seconds


def one_search(index: str, query_path: str, shortlist: int, fast: bool = False) -> list[tuple[str, float]]:
    """The full pipeline for one query, as the library's default search would run it (`fast`: today's search)."""
    with lookalike.Collection.open(index) as collection:
        if fast:
            return [(h.path, h.score) for h in collection.search([query_path], k=10, mode="fast")[0].hits]
        embedder = load_embedder()
        picture = Image.open(query_path).convert("RGB")
        views = propose_views(picture, embedder.input_size)
        vectors = embedder.embed(np.stack([v.pixels for v in views]))
        results = collection.search_vectors(vectors, [v.kind for v in views], k=K)
        ids = np.asarray([[h.id for h in r.hits] + [-1] * (K - len(r.hits)) for r in results])
        scores = np.asarray([[h.score for h in r.hits] + [0.0] * (K - len(r.hits)) for r in results], dtype=np.float32)
        paths = {h.id: h.path for r in results for h in r.hits}
        ranking = [(paths[i], s) for i, s, _ in fuse_view_hits(ids, scores)[:K]]
        run = {"picture": picture}
        ranked, _ = verified_ranking(run, ranking, FeatureStore(), shortlist, STRONG_INLIERS)
        return ranked[:10]


def report(queries, rankings, runs, verify_times, base_seconds, store, ingest_rate, new_process, args) -> None:
    from copydetect_report import write_report

    write_report(
        queries, rankings, runs, verify_times, base_seconds, store, ingest_rate, new_process, args, COPY_THRESHOLD
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2600)
    parser.add_argument("--queries", type=int, default=700)
    parser.add_argument("--quick", action="store_true", help="800 images, 240 queries")
    parser.add_argument("--shortlist", type=int, default=10, help="candidates verified per query")
    parser.add_argument("--verify-ranking", default="all views", help="which fused ranking the shortlist comes from")
    parser.add_argument("--strong", type=int, default=STRONG_INLIERS, help="inliers that end verification (0: never)")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "lookalike-copydetect"))
    parser.add_argument("--new-process-runs", type=int, default=13)
    parser.add_argument("--write-docs", action="store_true", help="append the tables to docs/benchmarks.md")
    parser.add_argument("--one-search", nargs=2, metavar=("INDEX", "QUERY"))
    parser.add_argument("--fast", action="store_true", help="with --one-search: today's single-vector search")
    parser.add_argument("--latency-only", action="store_true", help="only one search per new process, both modes")
    args = parser.parse_args()
    if args.one_search:
        for path, score in one_search(*args.one_search, args.shortlist, args.fast):
            print(f"{score:.3f} {path}")
        return
    if args.quick:
        args.images, args.queries = 800, 240
        args.data = args.data + "-quick"
    if args.latency_only:
        latency_only(args)
        return
    evaluate(args)


def latency_only(args: argparse.Namespace) -> None:
    """p50 and worst wall time of one search in a new process: today's search, and the full pipeline."""
    collection_folder, queries = build(Path(args.data), args.images, args.queries)
    with tempfile.TemporaryDirectory() as work:
        index = Path(work) / "index"
        with lookalike.Collection.create(index) as collection:
            collection.add_folder(collection_folder)
        for label, fast in (("today's search (--fast)", True), ("full pipeline", False)):
            seconds = time_new_process(index, queries, args.shortlist, args.new_process_runs, fast)
            print(
                f"{label}: one search in a new process, {len(seconds)} hard queries: "
                f"p50 {np.median(seconds):.2f} s, worst {max(seconds):.2f} s"
            )


if __name__ == "__main__":
    main()
