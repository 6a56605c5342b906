"""Building an IVF index in shards: train once, add the shards apart, merge their inverted lists.

The way the anchors build indexes too big for one process (autofaiss's distributed build): the coarse
quantizer, and any transform or codebook, is trained once on a sample; each shard of vectors is assigned and
encoded on its own, in a copy of that trained index, with its catalog ids; the shards' inverted lists are then
appended to the trained index. Every shard shares the trained quantizer, so the merged index holds exactly the
lists a single-process build holds (in another order within a list) and answers the same at the same nprobe.

The merged lists go either into the index in memory (`merge_in_memory`: the process holds the whole index)
or into a data file on disk (`merge_on_disk`: each shard is written to a scratch file as it arrives, so the
process holds one shard at a time, and the files are merged by Faiss into an `OnDiskInvertedLists` file that
search memory-maps; see ondisk.py).

Only kinds whose core is an IVF layer (optionally under PCA or OPQ transforms) merge this way: an HNSW graph
or a refine layer cannot be assembled from parts, and adding to a flat index costs no more than copying.
`add_shard` is a pure function of its arguments, for a worker process or a cluster task (ray_build.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from .errors import StorageError
from .index import VectorIndex, below_transforms
from .ondisk import write_on_disk

SHARD_VECTORS = 50_000  # vectors a shard adds: 256 MB of 1280-d float32 in flight per task
Shard = tuple[np.ndarray, np.ndarray]  # (ids, vectors)


class ShardAdder(Protocol):
    """Adds shards of (ids, vectors) to copies of a trained index somewhere, yields each built shard as bytes."""

    shard_vectors: int
    where: str  # for people: "on the Ray cluster at HOST:PORT"

    def added(self, trained: np.ndarray, metric: str, shards: Iterator[Shard]) -> Iterator[np.ndarray]: ...


class LocalShardAdder:
    """Adds the shards one after another in this process: an on-disk build without a cluster."""

    where = "in this process"

    def __init__(self, shard_vectors: int = SHARD_VECTORS) -> None:
        self.shard_vectors = shard_vectors

    def added(self, trained: np.ndarray, metric: str, shards: Iterator[Shard]) -> Iterator[np.ndarray]:
        for ids, vectors in shards:
            yield add_shard(trained, metric, ids, vectors)


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


def merge_in_memory(index: VectorIndex, adder: ShardAdder, shards: Iterator[Shard]) -> int:
    """Add `shards` through `adder` and merge each into `index` as it arrives; return how many shards."""
    merged = 0
    for shard in adder.added(trained_copy(index), index.metric, shards):
        merge_shard(index, shard)
        merged += 1
    return merged


def merge_on_disk(
    index: VectorIndex, adder: ShardAdder, shards: Iterator[Shard], path: Path, check: Callable[[int], None]
) -> tuple[str, int, int]:
    """Add `shards` through `adder`, write each to a scratch file, merge them into an on-disk index at `path`.

    `index` is the trained, empty index (it stays so). `check(total)` sees how many vectors the shards hold
    before anything is replaced, and raises to keep the previous index. Returns (index.faiss's checksum,
    vectors, shards).
    """
    files: list[Path] = []
    try:
        for shard in adder.added(trained_copy(index), index.metric, shards):
            files.append(_scratch_shard_file(path.parent, shard))
            del shard  # before the next one is built or received: one shard in memory at a time
        # Mapped, not read: the shards' lists are paged in from their files as the merge copies them.
        parts = [faiss.read_index(str(file), faiss.IO_FLAG_MMAP) for file in files]
        total = sum(int(part.ntotal) for part in parts)
        check(total)
        checksum = write_on_disk(index.index, parts, path)
        del parts
        return checksum, total, len(files)
    finally:
        for file in files:
            file.unlink(missing_ok=True)


def _scratch_shard_file(folder: Path, shard: np.ndarray) -> Path:
    """Write one built shard to a scratch file in `folder` (removed by the next update if this process dies)."""
    try:
        descriptor, name = tempfile.mkstemp(dir=folder, prefix=".index.shard.", suffix=".tmp")
    except OSError as error:
        raise StorageError(f"cannot write a shard of the index in {folder}: {error.strerror or error}") from None
    try:
        with open(descriptor, "wb") as handle:
            handle.write(np.ascontiguousarray(shard).data)
    except OSError as error:
        Path(name).unlink(missing_ok=True)
        reason = error.strerror or error
        raise StorageError(
            f"cannot write a shard of the index in {folder}: {reason}; the previous index is kept"
        ) from None
    return Path(name)
