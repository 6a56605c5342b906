"""Building an IVF index in shards: train once, add the shards apart, merge their inverted lists.

The way the anchors build indexes too big for one process (autofaiss's distributed build): the coarse
quantizer, and any transform or codebook, is trained once on a sample; each shard of vectors is assigned and
encoded on its own, in a copy of that trained index, with its catalog ids; the shards' inverted lists are then
appended to the trained index. Every shard shares the trained quantizer, so the merged index holds exactly the
lists a single-process build holds (in another order within a list) and answers the same at the same nprobe.

Only kinds whose core is an IVF layer (optionally under PCA or OPQ transforms) merge this way: an HNSW graph
or a refine layer cannot be assembled from parts, and adding to a flat index costs no more than copying.
`add_shard` is a pure function of its arguments, for a worker process or a cluster task (ray_build.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import faiss
import numpy as np

from .index import VectorIndex, below_transforms

SHARD_VECTORS = 50_000  # vectors a shard adds: 256 MB of 1280-d float32 in flight per task


class ShardAdder(Protocol):
    """Adds shards of (ids, vectors) to a trained index somewhere else, merges them into it, says how many."""

    shard_vectors: int
    where: str  # for people: "on the Ray cluster at HOST:PORT"

    def __call__(self, index: VectorIndex, shards: Iterator[tuple[np.ndarray, np.ndarray]]) -> int: ...


def builds_in_shards(index: VectorIndex) -> bool:
    """Whether `index` is a trained kind whose shards can be built apart and merged (an IVF core)."""
    return bool(index.is_trained) and isinstance(below_transforms(index.index), faiss.IndexIVF)


def trained_copy(index: VectorIndex) -> np.ndarray:
    """The trained index, empty of vectors, as bytes to send to the workers."""
    if index.count:
        raise ValueError("shards are added to a trained index that holds no vectors yet")
    return faiss.serialize_index(index.index)


def add_shard(trained: np.ndarray, metric: str, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Run on a worker: a copy of the trained index holding `vectors` under `ids`, as bytes."""
    shard = VectorIndex(faiss.deserialize_index(trained), metric)
    shard.add(ids, vectors)
    return faiss.serialize_index(shard.index)


def merge_shard(index: VectorIndex, shard: np.ndarray) -> int:
    """Append a shard's inverted lists to `index` (built from the same trained copy); return how many it held."""
    part = faiss.deserialize_index(shard)
    if part.d != index.dim or type(below_transforms(part)) is not type(below_transforms(index.index)):
        raise ValueError("this shard was not built from the index's trained copy")
    count = int(part.ntotal)  # merge_from moves the lists: the shard is empty afterwards
    index.index.merge_from(part, 0)
    return count
