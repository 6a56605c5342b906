"""Where an ingest's time goes, by thread: the serial part per image and the throughput it bounds (Amdahl).

The model and Pillow's decoders run without the GIL; everything else in the process (the consumer's catalog
rows, scanning, hashing glue, header parsing) runs one thread at a time. With `s` seconds of such serial work
per image, no number of cores ingests more than 1/s images a second.

- Consumer: the CPU time of the thread that calls `add_folder` (`time.thread_time`), less its time inside the
  embedder (ONNX Runtime's work on that thread, GIL released), per image. It includes the scan, the catalog
  writes, the progress callbacks and the final Faiss build.
- Decode workers, threads: `prepare_file`'s CPU time less its time in the calls that release the GIL (libjpeg
  decoding, resizing, BLAKE2 hashing, file reads; timed with a thread-CPU profiler), per image: an upper bound
  of the GIL it holds, as numpy's small array work is counted as holding it.
- Decode workers, processes: each has a GIL of its own; what remains in the parent is unpickling each result
  (timed here) and pickling each path.
"""

from __future__ import annotations

import cProfile
import os
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import lookalike
from lookalike.decode_pool import prepare_file

# C functions that release the GIL while they run, as named by cProfile.
GIL_FREE_CALLS = (
    "'decode' of 'ImagingDecoder'",
    "'resize' of 'ImagingCore'",
    "'update' of '_blake2.blake2b'",
    "'read' of '_io.BufferedReader'",
    "'read' of '_io.FileIO'",
    "posix.pread",
    "posix.read",
)
CORES_HERE = os.cpu_count() or 1


@dataclass(frozen=True)
class Run:
    """One ingest: images/s, and the consumer's serial CPU time per image (ms)."""

    mode: str
    workers: int
    rate: float
    consumer_ms: float


def timed_ingest(folder: Path, count: int, work: Path, mode: str, workers: int | None = None) -> Run:
    """lookalike end to end (scan, decode, embed, catalog, finished Faiss index; model already loaded)."""
    target = work / f"index-{mode}"
    shutil.rmtree(target, ignore_errors=True)
    with lookalike.Collection.create(target) as collection:
        embedder = collection.embedder()
        inner = embedder.submit
        in_model = [0.0]

        def submit(pixels):  # type: ignore[no-untyped-def]
            # Ingest submits each batch to the model; on a CPU the model runs inside this call.
            started = time.thread_time()
            try:
                return inner(pixels)
            finally:
                in_model[0] += time.thread_time() - started

        embedder.submit = submit  # type: ignore[method-assign]
        cpu, started = time.thread_time(), time.perf_counter()
        report = collection.add_folder(folder, workers=workers, decode_in=mode)
        seconds, cpu = time.perf_counter() - started, time.thread_time() - cpu
    assert report.embedded == count, report.summary()
    return Run(mode, workers or 0, count / seconds, (cpu - in_model[0]) / count * 1000)


def worker_gil_ms(files: list[Path], input_size: int) -> float:
    """Upper bound of the GIL one `prepare_file` holds, ms per image (see the module docstring)."""
    sample = [str(path) for path in files[:40]]
    for path in sample[:4]:
        prepare_file(path, input_size, None)  # warm the page cache and lazy imports
    cpu = time.thread_time()
    for path in sample:
        prepare_file(path, input_size, None)
    plain = time.thread_time() - cpu
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for path in sample:
        prepare_file(path, input_size, None)
    profiler.disable()
    profiler.create_stats()
    free = sum(
        stats[2]
        for (filename, _, name), stats in profiler.stats.items()  # type: ignore[attr-defined]
        if filename == "~" and any(call in name for call in GIL_FREE_CALLS)
    )
    return max(0.0, plain - free) / len(sample) * 1000


def parent_ms_per_result(files: list[Path], input_size: int) -> float:
    """The process pool's work in the parent per image: unpickle a result, pickle a path (ms)."""
    outcome = prepare_file(str(files[0]), input_size, None)
    blob = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    rounds = 500
    cpu = time.thread_time()
    for _ in range(rounds):
        pickle.loads(blob)
        pickle.dumps(str(files[0]))
    return (time.thread_time() - cpu) / rounds * 1000


def decode_per_core(files: list[Path], input_size: int) -> float:
    """Images one core prepares per CPU-second (decode, hash, signature), on one thread."""
    sample = [str(path) for path in files[:40]]
    cpu = time.thread_time()
    for path in sample:
        prepare_file(path, input_size, None)
    return len(sample) / (time.thread_time() - cpu)


def scaling_table(runs: list[Run], gil_ms: float, parent_ms: float, per_core: float, infer_rate: float) -> list[str]:
    """Markdown rows: workers, measured img/s, serial ms per image, Amdahl's bound, and the ceilings it must beat."""
    # Inference is measured on every core of this machine: its CPU cost per image is cores / rate.
    lines = [
        "| decode in | workers | img/s here | serial ms/img: consumer + workers' GIL (or parent unpickling) "
        "| Amdahl bound 1/serial (img/s) | 16 cores: decode / decode+model ceiling | 64 cores: same |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for run in runs:
        extra = gil_ms if run.mode == "threads" else parent_ms
        serial = run.consumer_ms + extra
        cells = []
        for cores in (16, 64):
            decode = cores * per_core
            model = cores / (1 / per_core + CORES_HERE / infer_rate)
            cells.append(f"{decode:.0f} / {model:.0f}")
        lines.append(
            f"| {run.mode} | {run.workers} | {run.rate:.1f} | {run.consumer_ms:.2f} + {extra:.2f} = {serial:.2f} "
            f"| {1000 / serial:.0f} | {cells[0]} | {cells[1]} |"
        )
    return lines
