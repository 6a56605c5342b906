"""IVF training on the GPU with faiss-gpu, when it is installed and sees a device.

Training an IVF index is k-means over a sample of the collection: for nlist in the thousands, minutes on
the CPU. Faiss lets the clustering of an IVF index run on another index (its `clustering_index`): a flat
index of the same metric copied to every GPU does the k-means' nearest-centroid searches there, while the
index itself stays an ordinary CPU index, trained, saved and searched as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def gpu_count() -> int:
    """GPUs a GPU build of Faiss sees (0 with faiss-cpu)."""
    import faiss

    if not hasattr(faiss, "index_cpu_to_all_gpus"):
        return 0
    return int(faiss.get_num_gpus())


@contextmanager
def ivf_training_on_gpus(index: Any) -> Iterator[bool]:
    """Within the block, `index.train` runs an IVF index's k-means on every GPU; yields whether it does.

    A no-op (yielding False) for indexes without an IVF layer, for faiss-cpu, and without a GPU.
    """
    import faiss

    ivf = _ivf_layer(index)
    if ivf is None or gpu_count() < 1:
        yield False
        return
    flat = faiss.IndexFlat(ivf.d, ivf.metric_type)
    ivf.clustering_index = faiss.index_cpu_to_all_gpus(flat)
    try:
        yield True
    finally:
        ivf.clustering_index = None  # frees the GPU copies; the trained centroids live in the quantizer


def _ivf_layer(index: Any) -> Any:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index (flat, HNSW, ...)
        return None
