"""The driver's CPU per image on a Ray cluster whose workers are never the bottleneck: what bounds one driver.

    python benchmarks/ray_driver.py --images 20000 --baseline OLD_CHECKOUT/src --shard-sizes 32,256   # as root

benchmarks/ray_ingest.py divides the driver's CPU by the images of a real ingest, but on a small cluster that
embeds 50-100 images/s, Ray's own background work in the driver (its threads run while tasks are out, whether
or not results come in) is most of that figure, and it shrinks per image as the cluster grows. Here the workers
send made-up results at once (no decoding, no model: the shape a worker sends for files named `*-NUMBER.jpg`,
from driver_commit.py), so the driver runs flat out: it scans and diffs a folder of --images empty files, sends
shards, takes in every result through Ray and commits it, as `lookalike index --ray` does. Its CPU (user +
system) at --images and at a third of it, less one from the other, per image, is its cost per image, imports
and connecting left out; images/s is the driver's own rate. Ray's threads in the driver also work per second,
whether results come in or not: a driver connected and idle for 10 s gives that rate, and the figure "less an
idle driver's" takes it out over the runs' difference in wall time.

Runs in new network and PID namespaces (only loopback; every Ray process ends with them), one node of 2 CPUs on
127.0.0.1. With --baseline (the src folder of another checkout, e.g. `git worktree add OLD 8a5c585`), each
version runs on a cluster of its own started with its code on PYTHONPATH, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray_launch import PORT, enter_namespaces, run_in_namespaces, start_head, stop_cluster, versions_to_compare

IDENTITY = "made-up@1"
HERE = Path(__file__).resolve().parent


def made_up_map(job: Any) -> tuple[str, object]:
    """Run on a worker: at once, what `map_shard` would send for the job's files."""
    from driver_commit import made_up_shard

    shard = made_up_shard(job.entries)
    if getattr(job, "collection", None):  # a version whose workers write the shard files where they share them
        from lookalike.ray_ingest import shares_collection

        if shares_collection(job):
            shard = shard.written_where_shared(Path(job.collection))
    return IDENTITY, shard


def child(photos: Path, index: Path, shard_size: int) -> None:
    """One driver: ingest `photos` into a new catalog through the cluster; prints wall seconds and the summary."""
    from lookalike.catalog import Catalog
    from lookalike.ingest import Ingester
    from lookalike.ray_cluster import ClusterSession, results_as_finished
    from lookalike.ray_ingest import RayMapper

    class MadeUpMapper(RayMapper):
        def __call__(self, todo: Iterator[Any], total: int) -> Iterator[Any]:  # RayMapper's, with made_up_map
            if total == 0:
                return
            with ClusterSession(self.address) as ray:
                task = ray.remote(max_retries=3, num_cpus=1)(made_up_map)
                if getattr(self, "collection", None) is not None:  # as RayMapper: the mark for workers that share it
                    from lookalike.ray_ingest import mark_shared

                    jobs = self._shards(todo, run_mark=mark_shared(self.collection))
                else:
                    jobs = self._shards(todo)
                for result in results_as_finished(ray, (task.remote(job) for job in jobs)):
                    yield self._checked(result)

    try:  # where workers see the collection (one machine here), versions that can have them write its shard files
        mapper = MadeUpMapper(f"127.0.0.1:{PORT}", "made-up", IDENTITY, 224, shard_size=shard_size, collection=index)
    except TypeError:
        mapper = MadeUpMapper(f"127.0.0.1:{PORT}", "made-up", IDENTITY, 224, shard_size=shard_size)
    catalog = Catalog.open(index, create=True)
    try:
        started = time.perf_counter()
        report = Ingester(catalog, lambda: None, 224, mapper=mapper).run(str(photos))  # type: ignore[arg-type, return-value]
        print(f"{time.perf_counter() - started} {report.summary()}")
    finally:
        catalog.close()


def idle_child(seconds: float) -> None:
    """A driver connected to the cluster and doing nothing: prints its CPU seconds per second (Ray's own threads)."""
    from lookalike.ray_cluster import ClusterSession

    with ClusterSession(f"127.0.0.1:{PORT}"):
        started = time.process_time()  # every thread of the process
        time.sleep(seconds)
        print(f"{(time.process_time() - started) / seconds}")


def idle_rate(version: str, seconds: float = 10.0) -> float:
    command = [sys.executable, __file__, "--idle", str(seconds)]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": version}, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    return float(done.stdout.strip().splitlines()[-1])


def timed_child(version: str, photos: Path, index: Path, shard_size: int) -> tuple[float, float, str]:
    """Driver CPU seconds, ingest wall seconds and summary of one driver process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, __file__, "--child", str(photos), "--index", str(index), "--shard", str(shard_size)]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": version}, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, summary = done.stdout.strip().splitlines()[-1].split(" ", 1)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), float(wall), summary


def inside(work: Path, count: int, versions: dict[str, str], shard_sizes: list[int]) -> None:
    """Run in the namespaces: for each version a cluster of its own, every shard size on it."""
    enter_namespaces()
    lines = []
    for name, source in versions.items():
        path = f"{source}{os.pathsep}{HERE}"  # the workers import this version's lookalike and driver_commit
        os.environ["PYTHONPATH"] = path
        start_head(work, "--node-ip-address=127.0.0.1", "--num-cpus=2", "--disable-usage-stats")
        try:
            idle = idle_rate(path)
            for shard in shard_sizes:
                runs = {}
                for folder in ("photos", "photos-third"):
                    index = work / f"{len(lines)}-{folder}.idx"
                    runs[folder] = timed_child(path, work / folder, index, shard)
                (cpu, wall, summary), (cpu_third, wall_third, _) = runs["photos"], runs["photos-third"]
                per_image = (cpu - cpu_third) / (count - count // 3)
                # Ray's threads work per second whatever comes in: what they took while idle, over the extra time.
                per_image_less_idle = per_image - idle * (wall - wall_third) / (count - count // 3)
                lines.append(
                    f"{name:14} shards of {shard:4}: driver cpu per image {1000 * per_image:.4f} ms "
                    f"({1000 * per_image_less_idle:.4f} less an idle driver's {idle:.3f} cpu s/s), "
                    f"{count / wall:,.0f} images/s (driver cpu {cpu:.2f} s, a third {cpu_third:.2f} s) | {summary}"
                )
        finally:
            stop_cluster()
    print("\n".join(lines))


def make_files(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for number in range(count):
        (folder / f"photo-{number:07d}.jpg").write_bytes(b"")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--baseline", help="the src folder of the code to compare with")
    parser.add_argument("--shard-sizes", default="32,256", help="comma-separated files per shard (--shard-size)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--index", help=argparse.SUPPRESS)
    parser.add_argument("--shard", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    parser.add_argument("--versions", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shard_sizes = [int(size) for size in args.shard_sizes.split(",")]
    if args.child:
        child(Path(args.child), Path(args.index), args.shard)
        return
    if args.idle:
        idle_child(args.idle)
        return
    if args.inside:
        inside(Path(args.inside), args.images, json.loads(args.versions), shard_sizes)
        return
    folders = {
        "photos": lambda folder: make_files(folder, args.images),
        "photos-third": lambda folder: make_files(folder, args.images // 3),
    }
    arguments = ["--images", str(args.images), "--shard-sizes", args.shard_sizes]
    run_in_namespaces(__file__, "raydrv", folders, arguments, versions_to_compare(args.baseline))


if __name__ == "__main__":
    main()
