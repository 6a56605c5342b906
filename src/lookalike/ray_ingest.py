"""The map step of ingest on a Ray cluster: shards of files decoded and embedded by the cluster's workers.

The driver (the process that holds the collection) scans and diffs as in a local run; only the files to
process travel, as shards of paths, to Ray tasks that run `map_step.map_files`. Each worker process loads the
embedder once and keeps it for every later shard it is given. Results come back as they finish, in any order,
each as one `MappedShard` (a tuple of plain values per file and one array of all the embeddings, cheap for the
driver to take in), and the driver commits each shard in its own transaction through the same commit step as a
local run: a driver that dies keeps every committed shard, and the next run resumes from them. A worker that
dies is retried by Ray.

Every node reads the photos itself, under the same path as the driver: the folder must be on a filesystem
that every node mounts at the same place. Every node needs the same lookalike and embedder weights; a shard
embedded with other weights is refused.

Ray is imported only here, only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .embedders import Embedder, load_embedder
from .embedding_shards import made_shard_folder, shard_folder
from .errors import EmbedderMismatchError, InvalidArgumentError, StorageError
from .files import FileEntry
from .map_step import MappedShard, map_files
from .ray_cluster import ClusterSession, import_ray, results_as_finished

SHARD_SIZE = 256  # files per task: the driver's cost per image falls with shard size (docs/benchmarks.md) ...
# ... so tasks on GPUs, where one driver must keep up with many fast workers, take more: 0.040 ms of the driver's CPU
# per image instead of 0.055 (side by side), for 2 s of a 500 images/s worker's time per task.
GPU_SHARD_SIZE = 1024
TASKS_PER_GPU = 4  # shard tasks sharing one GPU, so that the model is rarely idle while a task gathers a batch ...
# ... and each task decodes in threads on its share of its node's CPUs (a 16-core node with one GPU: 4 threads a
# task), where one thread a task left most of the cores idle (docs/benchmarks.md, "One task's map step").

RUN_MARK_PREFIX = ".cluster-run-"  # `mark_shared`: never a shard file's name, nor a scratch file's
_WORKER_EMBEDDERS: dict[tuple[str, str, str], Embedder] = {}  # per worker process: loaded once, kept


@dataclass(frozen=True)
class ShardJob:
    """What a worker needs to map one shard: the files and how to embed them."""

    # (path, size, mtime_ns) as plain tuples: Ray's pickler calls a Python hook for every other object it meets,
    # which cost the driver more per file than the rest of sending the shard.
    files: list[tuple[str, int, int]]
    embedder_name: str
    device: str
    engine: str
    input_size: int
    max_megapixels: float | None
    batch_size: int = 32  # images per model run inside the shard
    decode_threads: int = 0  # threads decoding ahead of the model (0: one file after another, between its runs)
    collection: str | None = None  # the collection's folder, where a worker that shares it writes the shard file
    run_mark: str = ""  # the name of the mark the driver left in the shard folder for this run (`mark_shared`)

    @property
    def entries(self) -> list[FileEntry]:
        return [FileEntry(path, size, mtime_ns) for path, size, mtime_ns in self.files]


def map_shard(job: ShardJob) -> tuple[str, MappedShard]:
    """Run on a worker: the identity of the embedder used and the map step's results for the shard's files."""
    key = (job.embedder_name, job.device, job.engine)
    embedder = _WORKER_EMBEDDERS.get(key)
    if embedder is None:
        embedder = _WORKER_EMBEDDERS[key] = load_embedder(job.embedder_name, job.device, job.engine)
    mapped = map_files(job.entries, embedder, job.input_size, job.max_megapixels, job.batch_size, job.decode_threads)
    if len(mapped.vectors) and shares_collection(job):
        # A node that cannot write there (full, mounted read-only) sends the vectors: the driver writes the file.
        with contextlib.suppress(StorageError):
            mapped = mapped.written_where_shared(Path(job.collection))  # type: ignore[arg-type]
    return embedder.identity, mapped


def shares_collection(job: ShardJob) -> bool:
    """Whether this node sees the collection's folder as the driver does: the driver's mark for this run is there."""
    return bool(job.collection and job.run_mark and (shard_folder(Path(job.collection)) / job.run_mark).is_file())


def mark_shared(collection: Path) -> str:
    """Leave a mark for this run in the collection's shard folder, and return its name. A worker that sees it
    shares the folder with the driver, so it writes each shard's file there itself and sends back only the rows:
    the driver then never takes in, checks or writes the vectors and signatures (5 and 1.2 KiB an image). A
    worker that does not see it sends them, as before. Marks left by a driver that was killed are removed."""
    folder = made_shard_folder(collection)
    for stale in folder.glob(f"{RUN_MARK_PREFIX}*"):
        stale.unlink(missing_ok=True)
    mark = f"{RUN_MARK_PREFIX}{secrets.token_hex(8)}"
    (folder / mark).touch()
    return mark


def cpus_per_gpu_task(nodes: list[dict[str, Any]]) -> int:
    """The CPUs each GPU shard task holds (and decodes with): its share of the CPUs of the GPU node with the fewest
    per GPU, so that a task fits on every GPU node; at least one. `nodes` is what `ray.nodes()` gives."""
    shares = [
        int(resources.get("CPU", 0) // (resources["GPU"] * TASKS_PER_GPU))
        for node in nodes
        if node.get("Alive") and (resources := node.get("Resources") or {}).get("GPU")
    ]
    return max(1, min(shares, default=1))


class RayMapper:
    """Maps files on a Ray cluster in shards: an `ingest.Mapper` for `Ingester`.

    `address` is what `ray.init` takes: "auto" (the RAY_ADDRESS environment variable, else the cluster started
    on this machine), "HOST:PORT" of a head node, or "ray://HOST:PORT" of a Ray client server.
    """

    def __init__(
        self,
        address: str,
        embedder_name: str,
        embedder_identity: str,
        input_size: int,
        device: str = "auto",
        engine: str = "auto",
        max_megapixels: float | None = None,
        shard_size: int | None = None,
        batch_size: int = 32,
        collection: Path | None = None,
    ) -> None:
        """`shard_size`: files per task, by default `GPU_SHARD_SIZE` with device cuda and `SHARD_SIZE` else.
        `collection`: the collection's folder, where workers that share it write the shard files themselves."""
        if shard_size is None:
            shard_size = GPU_SHARD_SIZE if device == "cuda" else SHARD_SIZE
        if shard_size < 1:
            raise InvalidArgumentError(f"a shard holds at least one file, not {shard_size}", "shard_size")
        import_ray()  # before any scanning: a missing ray is said at once
        self.address = address
        self.embedder_name = embedder_name
        self.embedder_identity = embedder_identity
        self.input_size = input_size
        self.device = device
        self.engine = engine
        self.max_megapixels = max_megapixels
        self.shard_size = shard_size
        self.batch_size = batch_size
        self.collection = collection

    def _shards(self, todo: Iterator[FileEntry], decode_threads: int = 0, run_mark: str = "") -> Iterator[ShardJob]:
        shard: list[FileEntry] = []
        for entry in todo:
            shard.append(entry)
            if len(shard) >= self.shard_size:
                yield self._job(shard, decode_threads, run_mark)
                shard = []
        if shard:
            yield self._job(shard, decode_threads, run_mark)

    def _job(self, entries: list[FileEntry], decode_threads: int = 0, run_mark: str = "") -> ShardJob:
        files = [(entry.path, entry.size, entry.mtime_ns) for entry in entries]
        return ShardJob(
            files,
            self.embedder_name,
            self.device,
            self.engine,
            self.input_size,
            self.max_megapixels,
            self.batch_size,
            decode_threads,
            None if self.collection is None else str(self.collection),
            run_mark,
        )

    def __call__(self, todo: Iterator[FileEntry], total: int) -> Iterator[MappedShard]:
        """Send the files in shards, a bounded number in flight, and yield each shard's results as it finishes."""
        if total == 0:
            return
        with ClusterSession(self.address) as ray:
            resources = self._resources(ray)
            # A task on a GPU decodes in as many threads as it holds CPUs; a CPU task (one CPU, whose model
            # computes on it too) decodes between the model's runs, as before.
            threads = int(resources["num_cpus"]) if self.device == "cuda" else 0
            task = ray.remote(max_retries=3, **resources)(map_shard)
            mark = "" if self.collection is None else mark_shared(self.collection)
            try:
                jobs = self._shards(todo, threads, mark)
                for result in results_as_finished(ray, (task.remote(job) for job in jobs)):
                    yield self._checked(result)
            finally:
                if self.collection is not None:
                    (shard_folder(self.collection) / mark).unlink(missing_ok=True)

    def _resources(self, ray: Any) -> dict[str, float]:
        """What each shard's task holds: a CPU; with device cuda a share of a GPU (several tasks per GPU) and
        that share of its node's CPUs."""
        if self.device != "cuda":
            return {"num_cpus": 1}
        if not ray.cluster_resources().get("GPU"):
            raise InvalidArgumentError(
                f"device cuda was asked for, but the Ray cluster at {self.address} has no GPU "
                "(start GPU nodes with ray start --num-gpus=N)",
                "device",
            )
        return {"num_cpus": cpus_per_gpu_task(ray.nodes()), "num_gpus": 1 / TASKS_PER_GPU}

    def _checked(self, result: tuple[str, MappedShard]) -> MappedShard:
        identity, mapped = result
        if identity != self.embedder_identity:
            raise EmbedderMismatchError(
                f"a worker of the Ray cluster embeds with {identity}, but the collection was embedded with "
                f"{self.embedder_identity}: install the same lookalike and weights on every node"
            )
        return mapped
