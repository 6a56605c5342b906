"""What one shard task costs the driver in Ray itself: sending the job and taking in the result, nothing else.

    python benchmarks/ray_task_cost.py --shard 1024 --tasks 200   # as root

benchmarks/ray_driver.py measures a whole driver beside its workers; on a machine of 2 cores they share the cores
and the driver's CPU per image then holds more than its own work. Here a local Ray instance (2 CPUs, in new
network and PID namespaces with only loopback) runs tasks that return at once, and the driver's process CPU (every
thread, Ray's own included) is measured over submitting --tasks jobs of --shard files (a `ShardJob`, as RayMapper
sends it) and taking in each result, as `results_as_finished` does: with the rows of a worker that wrote the shard
file itself (no vectors), and with a bare 1 for comparison. Best of three rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ray_launch import enter_namespaces

HERE = Path(__file__).resolve().parent


def rows_only_shard(count: int) -> object:
    """What a worker that shares the collection sends for `count` files: the rows, the file's name, checksums."""
    from driver_commit import made_up_shard
    from lookalike.files import FileEntry

    shard = made_up_shard([FileEntry(f"/photos/photo-{number:07d}.jpg", 1000, 1) for number in range(count)])
    rows = [row._replace(signature=None) for row in shard.rows]  # type: ignore[attr-defined]
    vectors = shard.vectors  # type: ignore[attr-defined]
    return type(shard)(rows, vectors[:0].copy(), "made-up.npy", [0] * len(vectors))


def measure(shard_size: int, tasks: int) -> None:
    import ray

    from lookalike.ray_cluster import results_as_finished
    from lookalike.ray_ingest import ShardJob

    result = rows_only_shard(shard_size)
    files = [(f"/photos/photo-{number:07d}.jpg", 1000, 1) for number in range(shard_size)]
    job = ShardJob(files, "made-up", "cpu", "auto", 224, None, collection="/collection", run_mark="mark")
    # A local instance would otherwise make ~/.ray/auth_token, which turns token authentication on for every
    # cluster later started on this machine.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        rows = ray.put(result)  # the tasks hand back this object: the driver's cost is taking it in
        answers = {"rows": ray.remote(lambda job, rows: rows), "a bare 1": ray.remote(lambda job, rows: 1)}
        for name, task in answers.items():
            best = float("inf")
            for _ in range(3):
                started = time.process_time()
                for _ in results_as_finished(ray, (task.remote(job, rows) for _ in range(tasks))):
                    pass
                best = min(best, time.process_time() - started)
            print(
                f"shards of {shard_size}, answer {name}: {1000 * best / tasks:.2f} ms of driver CPU per task, "
                f"{1000 * best / (tasks * shard_size):.4f} ms per image"
            )
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shard", type=int, default=1024)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        enter_namespaces()
        sys.path.insert(0, str(HERE))
        measure(args.shard, args.tasks)
        return
    namespaces = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]
    me = [sys.executable, __file__, "--inside", "--shard", str(args.shard), "--tasks", str(args.tasks)]
    os.execvp(namespaces[0], [*namespaces, *me])


if __name__ == "__main__":
    main()
