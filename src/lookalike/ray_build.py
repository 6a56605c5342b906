"""Building the index on a Ray cluster: shards of stored embeddings added by the workers, merged by the driver.

The driver (the process that holds the collection) trains the index on a sample as a local build does, puts
the trained, empty index in the cluster's object store once, and streams the stored embeddings from the
catalog in shards of `shard_vectors`: each task assigns and encodes one shard in a copy of the trained index
(`sharded_build.add_shard`) and returns it; the driver merges each shard's inverted lists as it arrives, a
bounded number in flight: into the index in memory, or (on disk) by writing each shard to a scratch file,
then merging the files into a data file search memory-maps, holding one shard at a time. The workers need
neither the catalog nor the photos: the vectors travel with the task. A worker that dies is retried by Ray;
nothing is saved until every shard is merged, so an interrupted build leaves the collection's index as it was.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .errors import InvalidArgumentError
from .ray_cluster import ClusterSession, import_ray, results_as_finished
from .sharded_build import SHARD_VECTORS, Shard, add_shard


class RayShardAdder:
    """Adds shards of vectors to a trained IVF index on a Ray cluster: a `sharded_build.ShardAdder`."""

    def __init__(self, address: str, shard_vectors: int = SHARD_VECTORS) -> None:
        if shard_vectors < 1:
            raise InvalidArgumentError(f"a shard holds at least one vector, not {shard_vectors}", "shard_size")
        import_ray()  # before any reading: a missing ray is said at once
        self.address = address
        self.shard_vectors = shard_vectors
        self.where = f"on the Ray cluster at {address}"

    def added(self, trained: np.ndarray, metric: str, shards: Iterator[Shard]) -> Iterator[np.ndarray]:
        """Send each (ids, vectors) shard to a task; yield the built shards as they finish."""
        with ClusterSession(self.address) as ray:
            copy = ray.put(trained)
            task = ray.remote(num_cpus=1, max_retries=3)(add_shard)
            submissions = (task.remote(copy, metric, ids, vectors) for ids, vectors in shards)
            yield from results_as_finished(ray, submissions)
