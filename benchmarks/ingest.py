"""Ingest benchmark: the tutorial's loop against lookalike's pipeline, and the machine's ceilings.

    python benchmarks/ingest.py                 # full run; writes the "Ingest" section of docs/benchmarks.md
    python benchmarks/ingest.py --large 60 --small 200 --no-memory --no-query   # a quick look

Everything runs in one process run, on the same files and the same model
weights, so the ratios are measured side by side. Photo sets are made from real
photographs (scikit-image's, and Debian's mate-backgrounds when installed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lookalike  # noqa: E402
from docs import machine_description, write_section  # noqa: E402
from lookalike.embedders import get_embedder_spec, load_embedder  # noqa: E402
from lookalike.images import decode_file  # noqa: E402
from photosets import make_photo_set  # noqa: E402

CORES = os.cpu_count() or 1


def tutorial_loop(files: list[Path]) -> float:
    """The tutorial's way: full decode, resize, a batch of one through PyTorch, index.add of one vector."""
    import faiss
    import torch

    spec = get_embedder_spec("efficientnet-lite0")
    module = spec.build_torch(spec.weights_path())
    index = faiss.IndexFlatIP(spec.dim)
    started = time.perf_counter()
    for path in files:
        image = Image.open(path).convert("RGB").resize((spec.input_size, spec.input_size))
        batch = torch.from_numpy(spec.normalise(np.asarray(image)[None]))
        with torch.no_grad():
            vector = module(batch).numpy()
        faiss.normalize_L2(vector)
        index.add(vector)
    return len(files) / (time.perf_counter() - started)


def lookalike_ingest(folder: Path, count: int, work: Path) -> float:
    """lookalike end to end: scan, decode, embed, catalog, finished Faiss index (model already loaded)."""
    target = work / "index"
    shutil.rmtree(target, ignore_errors=True)
    with lookalike.Collection.create(target) as collection:
        collection.embedder()
        started = time.perf_counter()
        report = collection.add_folder(folder)
        seconds = time.perf_counter() - started
    assert report.embedded == count, report.summary()
    return count / seconds


def decode_ceiling(files: list[Path], input_size: int) -> tuple[float, float]:
    """(best decode-only images/s using every core, full-resolution single-core decode images/s)."""
    with ThreadPoolExecutor(CORES) as pool:
        started = time.perf_counter()
        list(pool.map(lambda path: decode_file(str(path), input_size), files))
        best = len(files) / (time.perf_counter() - started)
    sample = files[: max(4, len(files) // 5)]
    started = time.perf_counter()
    for path in sample:
        Image.open(path).convert("RGB").load()
    full = len(sample) / (time.perf_counter() - started)
    return best, full


def inference_ceiling(input_size: int) -> dict[str, tuple[int, float]]:
    """Best (batch size, images/s) of each engine on the model alone."""
    rng = np.random.default_rng(1338)
    best: dict[str, tuple[int, float]] = {}
    for engine, sizes in (("onnx", (1, 4, 8, 16, 32, 64)), ("torch", (1, 8, 32))):
        embedder = load_embedder(engine=engine)
        for size in sizes:
            pixels = rng.integers(0, 256, (size, input_size, input_size, 3), dtype=np.uint8)
            embedder.embed(pixels)
            rounds = max(2, 64 // size)
            started = time.perf_counter()
            for _ in range(rounds):
                embedder.embed(pixels)
            rate = size * rounds / (time.perf_counter() - started)
            if rate > best.get(engine, (0, 0.0))[1]:
                best[engine] = (size, rate)
    return best


def peak_rss_of_ingest(folder: Path, work: Path) -> float:
    """Peak resident memory (MiB) of a fresh process that ingests `folder`."""
    script = (
        "import resource, sys, lookalike\n"
        "with lookalike.Collection.create(sys.argv[2]) as c:\n"
        "    c.add_folder(sys.argv[1])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    target = work / "rss-index"
    shutil.rmtree(target, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(target)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1]) / 1024


def build_vector_collection(folder: Path, files: list[Path], count: int) -> Path:
    """A collection of `count` vectors: real embeddings of `files`, then seeded jittered copies of them."""
    from lookalike.catalog import NewImage

    if (folder / "catalog.sqlite").exists():
        with lookalike.Collection.open(folder) as collection:
            if collection.catalog.count() == count:
                return folder
        shutil.rmtree(folder)
    embedder = load_embedder()
    real = embedder.embed(np.stack([decode_file(str(p), embedder.input_size).pixels for p in files]))
    rng = np.random.default_rng(1338)
    with lookalike.Collection.create(folder) as collection:
        for start in range(0, count, 5000):
            size = min(5000, count - start)
            base = real[rng.integers(0, len(real), size)]
            vectors = base + rng.normal(0, 0.02, base.shape).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            collection.catalog.add_indexed(
                [
                    NewImage(f"/synthetic/{start + i:07}.jpg", 0, 0, f"synthetic-{start + i}", 4032, 3024, v)
                    for i, v in enumerate(vectors)
                ]
            )
        collection.index()
    return folder


def query_latency(index: Path, query: Path, runs: int = 9) -> tuple[float, float]:
    """(p50, max) seconds of `lookalike search QUERY --index INDEX` in a new process each time."""
    command = [sys.executable, "-m", "lookalike.cli", "search", str(query), "--index", str(index), "-k", "10", "--fast"]
    subprocess.run(command, check=True, capture_output=True)  # warm the page cache and the ONNX export
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=200, help="12 MP JPEGs (4032x3024) to ingest")
    parser.add_argument("--small", type=int, default=1000, help="web-size JPEGs (800x600) to ingest")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lookalike-bench")
    parser.add_argument("--no-memory", action="store_true", help="skip the 1k/10k peak-memory runs")
    parser.add_argument("--no-query", action="store_true", help="skip the 100k-vector query latency run")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    work = args.work
    spec = get_embedder_spec("efficientnet-lite0")
    load_embedder()  # exports the ONNX model once, outside every timing

    sets = {
        "12 MP JPEG (4032x3024)": make_photo_set(work / "large", args.large, (4032, 3024)),
        "web-size JPEG (800x600)": make_photo_set(work / "small", args.small, (800, 600)),
    }
    inference = inference_ceiling(spec.input_size)
    best_engine, (best_batch, infer_rate) = max(inference.items(), key=lambda item: item[1][1])
    rows = []
    for name, folder in sets.items():
        files = sorted(folder.glob("*.jpg"))
        tutorial = tutorial_loop(files)
        ours = lookalike_ingest(folder, len(files), work)
        decode_best, decode_full = decode_ceiling(files, spec.input_size)
        limit = 1 / (1 / decode_best + 1 / infer_rate)
        rows.append((name, len(files), tutorial, ours, decode_full, decode_best, limit))
        print(
            f"{name}: tutorial {tutorial:.1f}/s, lookalike {ours:.1f}/s ({ours / tutorial:.1f}x), "
            f"limit {limit:.1f}/s ({ours / limit:.0%})",
            flush=True,
        )

    table = [
        "| photo set | images | tutorial loop (img/s) | lookalike (img/s) | ratio | decode only: full-size 1 core / "
        "lookalike's, all cores (img/s) | limit (img/s) | lookalike / limit |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, count, tutorial, ours, full, best, limit in rows:
        table.append(
            f"| {name} | {count} | {tutorial:.1f} | {ours:.1f} | {ours / tutorial:.1f}x | "
            f"{full:.1f} / {best:.1f} | {limit:.1f} | {ours / limit:.0%} |"
        )
    engines = ", ".join(f"{engine} {rate:.0f} img/s at batch {batch}" for engine, (batch, rate) in inference.items())
    notes = [
        f"Inference ceiling (model alone, best batch): {engines}; the limit uses {best_engine}.",
        "The limit for an end-to-end ingest is 1 / (1/decode + 1/inference): both stages share the same cores.",
    ]
    for name, _, tutorial, _, _, _, limit in rows:
        notes.append(
            f"{name}: even at 100% of the limit lookalike would be {limit / tutorial:.1f}x the tutorial loop; "
            "the rest of the gap to the limit is scanning, hashing, catalog writes and the final index build."
        )
    if not args.no_memory:
        small_rss = []
        for count in (1000, 10_000):
            folder = make_photo_set(work / f"rss-{count}", count, (800, 600))
            small_rss.append((count, peak_rss_of_ingest(folder, work)))
            print(f"peak RSS ingesting {count}: {small_rss[-1][1]:.0f} MiB", flush=True)
        notes.append(
            "Peak RSS of a fresh `lookalike` process ingesting web-size JPEGs: "
            + ", ".join(f"{count:,} images {rss:.0f} MiB" for count, rss in small_rss)
            + "."
        )
    if not args.no_query:
        large_files = sorted(sets["12 MP JPEG (4032x3024)"].glob("*.jpg"))
        index = build_vector_collection(work / "index-100k", large_files[:100], 100_000)
        p50, worst = query_latency(index, large_files[0])
        print(f"lookalike search one 12 MP JPEG, 100k vectors: p50 {p50:.2f} s", flush=True)
        notes.append(
            f"`lookalike search one.jpg --index DIR -k 10` (new process each time; a 12 MP JPEG; "
            f"100,000 vectors, index `auto`): p50 {p50:.2f} s, worst of 9 {worst:.2f} s."
        )
    report = "\n".join(table) + "\n\n" + "\n".join(f"- {note}" for note in notes)
    print(report)
    if not args.no_docs:
        write_section(
            "Ingest",
            f"Command: `python benchmarks/ingest.py --large {args.large} --small {args.small}`\n\n"
            f"Machine: {machine_description()}\n\n{report}",
        )


if __name__ == "__main__":
    main()
