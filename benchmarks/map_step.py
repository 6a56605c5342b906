"""Images/s of one map task (what a Ray worker runs per shard): decoding inline or in threads beside the model.

    python benchmarks/map_step.py --work /tmp/mapstep                 # 12 MP photos and 1,600 x 1,200 photos
    python benchmarks/map_step.py --work /tmp/mapstep --threads 0,1,2 --repeats 3
    python benchmarks/map_step.py --work /tmp/mapstep --tasks 2      # N one-CPU tasks at once, model threads

`map_step.map_files` on one shard of real-photo JPEGs (benchmarks/photosets.py: seeded variations of the
photographs installed packages ship), with EfficientNet-Lite0 on this machine's CPU, in this process: once
decoding one file after another between the model's runs (0 threads, how a task ran before), once with N
threads decoding ahead of the model. The settings alternate, the best of --repeats counts; the results of
every setting are checked to be the same files with the same embeddings.

With --tasks N: N processes map the 1,600 x 1,200 shard at once, as N one-CPU Ray tasks on one node do (Ray
sets OMP_NUM_THREADS to a task's CPUs), once with OMP_NUM_THREADS=1 in their environment and once without it
(the model then takes a thread per core in every process); images/s of all of them together, best of --repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from lookalike import load_embedder  # noqa: E402
from lookalike.files import FileEntry, scan_images  # noqa: E402
from lookalike.map_step import MappedShard, map_files  # noqa: E402
from photosets import make_photo_set, make_wallpaper_set  # noqa: E402


def shard_of(folder: Path) -> list[FileEntry]:
    return list(scan_images(str(folder)))


def timed(entries: list[FileEntry], embedder: object, threads: int) -> tuple[float, float, MappedShard]:
    wall, cpu = time.perf_counter(), time.process_time()
    mapped = map_files(entries, embedder, embedder.input_size, None, 32, threads)  # type: ignore[attr-defined]
    return time.perf_counter() - wall, time.process_time() - cpu, mapped


def compare(name: str, entries: list[FileEntry], embedder: object, settings: list[int], repeats: int) -> None:
    best: dict[int, tuple[float, float]] = {}
    reference: MappedShard | None = None
    for _ in range(repeats):
        for threads in settings:
            wall, cpu, mapped = timed(entries, embedder, threads)
            if reference is None:
                reference = mapped
            assert [row.path for row in mapped.rows] == [row.path for row in reference.rows]
            np.testing.assert_allclose(mapped.vectors, reference.vectors, atol=1e-5)
            if threads not in best or wall < best[threads][0]:
                best[threads] = (wall, cpu)
    base = best[settings[0]][0]
    print(f"{name}: {len(entries)} files, best of {repeats}")
    for threads, (wall, cpu) in best.items():
        print(
            f"  decode threads {threads}: {len(entries) / wall:6.1f} images/s  ({wall:.2f} s wall, {cpu:.2f} s CPU;"
            f" {base / wall:.2f}x the first setting)"
        )


def concurrent_tasks(folder: Path, tasks: int, repeats: int) -> None:
    """N processes mapping the same shard at once, with and without OMP_NUM_THREADS=1."""
    files = len(shard_of(folder))
    settings = {"OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"}, "OMP_NUM_THREADS unset": {}}
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, extra in settings.items():
            environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
            command = [sys.executable, __file__, "--work", str(folder), "--child"]
            started = time.perf_counter()
            children = [subprocess.Popen(command, env={**environment, **extra}) for _ in range(tasks)]
            assert all(child.wait() == 0 for child in children)
            rate = tasks * files / (time.perf_counter() - started)
            best[name] = max(best.get(name, 0.0), rate)
    print(f"{tasks} tasks at once, {files} 1,600 x 1,200 JPEGs each, best of {repeats}:")
    for name, rate in best.items():
        print(f"  {name:22} {rate:6.1f} images/s in all")


def child(folder: Path) -> None:
    embedder = load_embedder("efficientnet-lite0", "cpu")
    map_files(shard_of(folder), embedder, embedder.input_size, None, 32, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the photo sets (kept between runs)")
    parser.add_argument("--threads", default="0,1,2", help="decode threads to compare, the first is the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=64, help="12 MP photos")
    parser.add_argument("--small", type=int, default=256, help="1,600 x 1,200 photos")
    parser.add_argument("--tasks", type=int, help="compare N concurrent one-CPU tasks' model threads instead")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.work)
        return
    if args.tasks:
        small = make_photo_set(args.work / "small", args.small, (1600, 1200))
        concurrent_tasks(small, args.tasks, args.repeats)
        return
    settings = [int(part) for part in args.threads.split(",")]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    embedder = load_embedder("efficientnet-lite0", "cpu")
    embedder.embed(np.zeros((1, embedder.input_size, embedder.input_size, 3), np.uint8))  # warm the session
    large = make_wallpaper_set(args.work / "large", args.large, detailed=False)
    if large is not None:
        compare("12 MP JPEGs", shard_of(large), embedder, settings, args.repeats)
    small = make_photo_set(args.work / "small", args.small, (1600, 1200))
    compare("1,600 x 1,200 JPEGs", shard_of(small), embedder, settings, args.repeats)


if __name__ == "__main__":
    main()
