"""Ingest throughput on a local Ray cluster against a local run, and the driver's own CPU time per image.

    python benchmarks/ray_ingest.py --images 1200          # as root: it makes a loopback-only network namespace
    python benchmarks/ray_ingest.py --images 1200 --baseline OLD_CHECKOUT/src --shard-sizes 32,256

Makes --images seeded copies of scikit-image's photos (cropped, mirrored, retoned JPEGs, about 50 KB each),
indexes them once without Ray, then on a cluster of 1 and of 2 nodes of one CPU each, started on 127.0.0.1
inside new network and PID namespaces (only loopback exists there; every Ray process ends with them). Each run
is a new `lookalike index` process into a new collection: imports, connecting and model loads are included.
The driver's CPU time (user + system of the `lookalike index` process) is measured at --images and at a third
of it; their difference per image is the driver's cost per image, imports and connecting left out.

With --baseline (the src folder of another checkout, e.g. `git worktree add OLD 8a5c585`), the Ray runs are made
with that code too, side by side: each version on a cluster of its own, started with that version on PYTHONPATH
(Ray's workers import lookalike from there, as the driver does). --shard-sizes: the files per shard to run
(the CLI's --shard-size; --batch-size for a baseline older than that option); 256 is the default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from ray_launch import (
    PORT,
    THIS_CHECKOUT,
    enter_namespaces,
    ray_cli,
    run_in_namespaces,
    start_head,
    stop_cluster,
    versions_to_compare,
)


def make_photos(folder: Path, count: int, seed: int = 7) -> None:
    from PIL import ImageEnhance, ImageOps

    from lookalike.demo import SAMPLE_PHOTOS, sample_photo

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    photos = {name: sample_photo(name) for name in SAMPLE_PHOTOS}
    for number in range(count):
        name = SAMPLE_PHOTOS[number % len(SAMPLE_PHOTOS)]
        image = photos[name]
        w, h = image.size
        box = (rng.randint(0, w // 6), rng.randint(0, h // 6), w - rng.randint(0, w // 6), h - rng.randint(0, h // 6))
        image = image.crop(box)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
        image.save(folder / f"{name}-{number:05d}.jpg", quality=rng.randint(70, 95))


def timed_index(photos: Path, index: Path, *extra: str) -> tuple[float, float, str]:
    """Wall seconds, driver CPU seconds and the summary line of one `lookalike index` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lookalike", "index", str(photos), "--index", str(index), *extra],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout.splitlines()[0]


def inside(work: Path, count: int, versions: dict[str, str], shard_sizes: list[int]) -> None:
    """Run in the namespaces: the local run, then clusters of 1 and 2 nodes for each version and shard size."""
    enter_namespaces()
    small = work / "photos-third"
    os.environ["PYTHONPATH"] = next(iter(versions.values()))
    rows = [("local", *timed_index(work / "photos", work / "local.idx"))]
    node = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    runs = []
    for nodes in (1, 2):
        for version, source in versions.items():
            os.environ["PYTHONPATH"] = source  # the cluster's workers and the driver run this version's code
            start_head(work, *node)
            if nodes == 2:
                ray_cli("start", f"--address=127.0.0.1:{PORT}", *node)
            try:
                for shard in shard_sizes:
                    name = f"ray, {nodes} node(s), {version}, shards of {shard}"
                    # A baseline older than `--shard-size` took the files per shard from `--batch-size`.
                    size_flag = "--shard-size" if version == THIS_CHECKOUT else "--batch-size"
                    extra = ["--ray", f"127.0.0.1:{PORT}", size_flag, str(shard)]
                    folder = f"ray{nodes}-{len(runs)}"
                    rows.append((name, *timed_index(work / "photos", work / f"{folder}.idx", *extra)))
                    rows.append((f"{name}, a third", *timed_index(small, work / f"{folder}s.idx", *extra)))
                    runs.append(name)
            finally:
                stop_cluster()
    for name, wall, cpu, summary in rows:
        print(f"{name:48} wall {wall:6.1f} s  driver cpu {cpu:5.2f} s  | {summary}")
    for name in runs:
        full = next(r for r in rows if r[0] == name)
        third = next(r for r in rows if r[0] == f"{name}, a third")
        per_image = (full[2] - third[2]) / (count - count // 3)
        print(f"driver cpu per image, {name}: {1000 * per_image:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--baseline", help="the src folder of the code to compare with")
    parser.add_argument("--shard-sizes", default="256", help="comma-separated files per shard (--shard-size)")
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    parser.add_argument("--versions", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shard_sizes = [int(size) for size in args.shard_sizes.split(",")]
    if args.inside:
        inside(Path(args.inside), args.images, json.loads(args.versions), shard_sizes)
        return
    folders = {
        "photos": lambda folder: make_photos(folder, args.images),
        "photos-third": lambda folder: make_photos(folder, args.images // 3, seed=8),
    }
    arguments = ["--images", str(args.images), "--shard-sizes", args.shard_sizes]
    run_in_namespaces(__file__, "raybench", folders, arguments, versions_to_compare(args.baseline))


if __name__ == "__main__":
    main()
