"""Ingest benchmark: the tutorial's loop against lookalike's pipeline, the machine's ceilings, and scaling.

    python benchmarks/ingest.py                 # full run; writes the "Ingest" section of docs/benchmarks.md
    python benchmarks/ingest.py --large 60 --wallpapers 60 --small 200 --no-memory --no-query   # a quick look

Everything runs in one process run, on the same files and the same model
weights, so the ratios are measured side by side. Photo sets are made from real
photographs (scikit-image's, Debian's mate-backgrounds and the installed desktop
wallpapers; see photosets.py). lookalike runs with decoding in threads and in
processes, alternately, `--repeats` times each; the best run of each counts (the
machine may be shared). The scaling table (ingest_scaling.py) gives the serial
time per image and the throughput it bounds on any number of cores.
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
from ingest_scaling import (  # noqa: E402
    Run,
    decode_per_core,
    parent_ms_per_result,
    scaling_table,
    timed_ingest,
    worker_gil_ms,
)
from lookalike.embedders import get_embedder_spec, load_embedder  # noqa: E402
from lookalike.images import decode_file  # noqa: E402
from photosets import make_photo_set, make_wallpaper_set  # noqa: E402

CORES = os.cpu_count() or 1
MODES = ("threads", "processes")


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


def best_runs(folder: Path, count: int, work: Path, repeats: int, workers: int | None = None) -> dict[str, Run]:
    """The fastest of `repeats` ingests in each decode mode, run alternately."""
    best: dict[str, Run] = {}
    for _ in range(repeats):
        for mode in MODES:
            run = timed_ingest(folder, count, work, mode, workers)
            if mode not in best or run.rate > best[mode].rate:
                best[mode] = run
    return best


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


ENGINES = (("onnx", (1, 4, 8, 16, 32, 64)), ("torch", (1, 8, 32)))


def inference_ceiling(input_size: int, engines: tuple = ENGINES) -> dict[str, tuple[int, float]]:
    """Best (batch size, images/s) of each engine on the model alone."""
    rng = np.random.default_rng(1338)
    best: dict[str, tuple[int, float]] = {}
    for engine, sizes in engines:
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
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across fork and execve, so a child would report
    # this (model-loaded) benchmark process's own peak. VmHWM belongs to the new program's memory alone.
    script = (
        "import re, sys, lookalike\n"
        "with lookalike.Collection.create(sys.argv[2]) as c:\n"
        "    c.add_folder(sys.argv[1])\n"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
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


def photo_sets(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The sets to ingest, by name; the wallpaper sets only where wallpapers are installed."""
    sets = {"12 MP JPEG (4032x3024), mate + scikit-image": make_photo_set(work / "large", args.large, (4032, 3024))}
    for detailed, name in ((False, "12 MP smooth wallpapers, q90"), (True, "12 MP detailed wallpapers, q95")):
        folder = make_wallpaper_set(work / ("detailed" if detailed else "smooth"), args.wallpapers, detailed)
        if folder is not None:
            sets[name] = folder
    sets["web-size JPEG (800x600)"] = make_photo_set(work / "small", args.small, (800, 600))
    return sets


def throughput_rows(sets: dict[str, Path], work: Path, args: argparse.Namespace, engine: str) -> list[tuple]:
    """Per set: (name, images, MB per file, tutorial img/s or None, best Run per mode, decode ceilings, limit).

    Each repeat measures the ceilings (decode alone, the model alone) next to both ingests, and the best of
    each counts: on a shared machine, a ceiling measured at a quiet moment against ingests measured at a busy
    one (or the reverse) would make any ratio meaningless.
    """
    input_size = get_embedder_spec("efficientnet-lite0").input_size
    batches = dict(ENGINES)[engine][-3:]
    rows = []
    for number, (name, folder) in enumerate(sets.items()):
        files = sorted(folder.glob("*.jpg"))
        megabytes = sum(path.stat().st_size for path in files) / len(files) / 1e6
        tutorial = tutorial_loop(files[: args.tutorial]) if number == 0 and args.tutorial else None
        runs: dict[str, Run] = {}
        decode_best = decode_full = infer_rate = 0.0
        for _ in range(args.repeats):
            best, full = decode_ceiling(files, input_size)
            decode_best, decode_full = max(decode_best, best), max(decode_full, full)
            infer_rate = max(infer_rate, inference_ceiling(input_size, ((engine, batches),))[engine][1])
            for mode, run in best_runs(folder, len(files), work, 1).items():
                if mode not in runs or run.rate > runs[mode].rate:
                    runs[mode] = run
        limit = 1 / (1 / decode_best + 1 / infer_rate)
        rows.append((name, len(files), megabytes, tutorial, runs, decode_full, decode_best, infer_rate, limit))
        print(
            f"{name}: "
            + ", ".join(f"{mode} {run.rate:.1f}/s ({run.rate / limit:.0%})" for mode, run in runs.items())
            + f", decode {decode_best:.1f}/s, model {infer_rate:.1f}/s, limit {limit:.1f}/s"
            + (f", tutorial {tutorial:.1f}/s" if tutorial else ""),
            flush=True,
        )
    return rows


def throughput_table(rows: list[tuple]) -> list[str]:
    table = [
        "| photo set | images | MB/file | tutorial loop (img/s) | lookalike, threads / processes (img/s) "
        "| vs tutorial | decode only: full-size 1 core / lookalike's, all cores (img/s) | model alone (img/s) "
        "| limit (img/s) | lookalike / limit: threads / processes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, count, megabytes, tutorial, runs, full, best, model, limit in rows:
        fastest = max(run.rate for run in runs.values())
        table.append(
            f"| {name} | {count} | {megabytes:.2f} | {f'{tutorial:.1f}' if tutorial else '-'} "
            f"| {runs['threads'].rate:.1f} / {runs['processes'].rate:.1f} "
            f"| {f'{fastest / tutorial:.1f}x' if tutorial else '-'} | {full:.1f} / {best:.1f} | {model:.1f} "
            f"| {limit:.1f} "
            f"| {runs['threads'].rate / limit:.0%} / {runs['processes'].rate / limit:.0%} |"
        )
    return table


def scaling_section(folder: Path, work: Path, args: argparse.Namespace, infer_rate: float) -> list[str]:
    """The scaling table on one set: 1 and all workers, threads and processes."""
    files = sorted(folder.glob("*.jpg"))
    input_size = get_embedder_spec("efficientnet-lite0").input_size
    runs = []
    for workers in sorted({1, CORES}):
        best = best_runs(folder, len(files), work, args.repeats, workers)
        runs += [best[mode] for mode in MODES]
    gil, parent, per_core = (
        worker_gil_ms(files, input_size),
        parent_ms_per_result(files, input_size),
        decode_per_core(files, input_size),
    )
    print(f"worker GIL {gil:.2f} ms/img, parent per result {parent:.3f} ms, {per_core:.1f} img/s per core", flush=True)
    return scaling_table(runs, gil, parent, per_core, infer_rate) + [
        "",
        f"- Decode per core (prepare_file: decode, hash, signature; one thread): {per_core:.1f} img/s per CPU-second; "
        "the 16- and 64-core ceilings are that times the cores, and with the model: cores / (decode + model CPU "
        f"per image), the model's CPU per image being {CORES} cores / its best rate here.",
        f"- Workers' GIL (threads): {gil:.2f} ms per image (upper bound); parent work per result (processes): "
        f"{parent:.3f} ms.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=200, help="12 MP JPEGs (4032x3024) from mate + scikit-image")
    parser.add_argument("--wallpapers", type=int, default=200, help="12 MP JPEGs per wallpaper set")
    parser.add_argument("--small", type=int, default=1000, help="web-size JPEGs (800x600) to ingest")
    parser.add_argument("--repeats", type=int, default=2, help="ingests per decode mode and set; the best counts")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lookalike-bench")
    parser.add_argument("--tutorial", type=int, default=60, help="images for the tutorial loop (0: skip it)")
    parser.add_argument("--no-memory", action="store_true", help="skip the 1k/10k peak-memory runs")
    parser.add_argument("--no-query", action="store_true", help="skip the 100k-vector query latency run")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    work = args.work
    spec = get_embedder_spec("efficientnet-lite0")
    load_embedder()  # exports the ONNX model once, outside every timing

    sets = photo_sets(work, args)
    inference = inference_ceiling(spec.input_size)
    best_engine, (best_batch, infer_rate) = max(inference.items(), key=lambda item: item[1][1])
    rows = throughput_rows(sets, work, args, best_engine)
    infer_rate = max([infer_rate] + [row[7] for row in rows])
    scaling_set = next((name for name in sets if "smooth" in name), next(iter(sets)))
    scaling = scaling_section(sets[scaling_set], work, args, infer_rate)

    engines = ", ".join(f"{engine} {rate:.0f} img/s at batch {batch}" for engine, (batch, rate) in inference.items())
    notes = [
        f"Inference ceiling (model alone, best batch, at the start): {engines}; the limits use {best_engine}, "
        "measured again next to each set's ingests (the model alone column).",
        "The limit for an end-to-end ingest is 1 / (1/decode + 1/inference): both stages share the same cores.",
        f"Every figure in the table is the best of {args.repeats} rounds; a round measures the ceilings and "
        "both ingests of a set one after the other.",
    ]
    for name, _, _, tutorial, _, _, _, _, limit in rows:
        if tutorial:
            notes.append(
                f"{name}: the tutorial loop ran on the first {args.tutorial} images; at 100% of the limit lookalike "
                f"would be {limit / tutorial:.1f}x it."
            )
    notes += memory_and_query_notes(sets, work, args)
    report = (
        "\n".join(throughput_table(rows))
        + "\n\n"
        + "\n".join(f"- {note}" for note in notes)
        + f"\n\nScaling ({scaling_set}): serial time per image and the throughput it bounds.\n\n"
        + "\n".join(scaling)
    )
    print(report)
    if not args.no_docs:
        write_section(
            "Ingest",
            f"Command: `python benchmarks/ingest.py --large {args.large} --wallpapers {args.wallpapers} "
            f"--small {args.small} --repeats {args.repeats} --tutorial {args.tutorial}"
            + (" --no-memory" if args.no_memory else "")
            + (" --no-query" if args.no_query else "")
            + f"`\n\nMachine: {machine_description()}\n\n{report}",
        )


def memory_and_query_notes(sets: dict[str, Path], work: Path, args: argparse.Namespace) -> list[str]:
    notes = []
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
        large_files = sorted(next(iter(sets.values())).glob("*.jpg"))
        index = build_vector_collection(work / "index-100k", large_files[:100], 100_000)
        p50, worst = query_latency(index, large_files[0])
        print(f"lookalike search one 12 MP JPEG, 100k vectors: p50 {p50:.2f} s", flush=True)
        notes.append(
            f"`lookalike search one.jpg --index DIR -k 10` (new process each time; a 12 MP JPEG; "
            f"100,000 vectors, index `auto`): p50 {p50:.2f} s, worst of 9 {worst:.2f} s."
        )
    return notes


if __name__ == "__main__":
    main()
