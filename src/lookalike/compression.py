"""Compressed codes for memory-bound plans: which ones the planner considers, and the recall each reaches.

The planner (planner.py) picks among these when float vectors do not fit the memory budget. Recall figures
are recall@10 ceilings (any nprobe) measured by benchmarks/scale.py and benchmarks/scale_budget.py on
1280-d embeddings at 1M vectors; `lookalike tune` then measures the real one on the collection.
"""

from __future__ import annotations

from .rerank import RERANK_PARAM

# Vector codecs over all dimensions. SQ6: benchmarks/scale_budget.py at 1M vectors whose spectrum matches
# real embeddings' (0.934 at nprobe 64). SQ8, SQ4 and PQ: benchmarks/scale.py on its previous generator
# (isotropic noise, which made codes look worse than on real embeddings: SQ6 measured 0.894 there), SQ4 at
# 100k where it already did worse; the ceilings drop as N grows.
CODEC_RECALL = {"Flat": 1.0, "SQ8": 0.97, "SQ6": 0.93, "SQ4": 0.75}
PQ_RECALL = ((0.5, 0.85), (0.125, 0.60), (0.05, 0.30), (0.0, 0.20))  # (bytes per dim at least, recall@10)

# PCA to a fifth of the dimensions with 8-bit codes, then exact re-ranking of RERANK_FACTOR x k candidates
# with the catalog's float vectors (rerank.py): RAM holds 1/20 of the floats, the disk the rest. Measured by
# benchmarks/scale_budget.py at 1M vectors (PCAR256 of 1280): 0.793 alone, 0.995-0.997 re-ranked 4 x k
# (nprobe 16-128); 10 x k gains at most 0.003 more and reads 2.5 times the rows.
PCA_FRACTION = 5
RERANK_FACTOR = 4
PCA_RECALL = 0.79  # without re-ranking: the discarded fifth of the variance reorders close neighbours
PCA_RERANK_RECALL = 0.99
PCA_MIN_DIM = 512  # measured on 1280-d embeddings; below this many dimensions the planner does not use PCA


def pca_dims(dim: int) -> int | None:
    """Dimensions the planner's PCA keeps (a multiple of 4), or None when `dim` is too small to reduce."""
    return (dim // PCA_FRACTION) // 4 * 4 if dim >= PCA_MIN_DIM else None


def pca_factory(dim: int, prefix: str) -> str | None:
    """`PCAR{d},{prefix}SQ8`: PCA with a random rotation (balanced variance for the scalar codes), 8-bit codes."""
    d = pca_dims(dim)
    return f"PCAR{d},{prefix}SQ8" if d else None


def expected_recall(factory: str, params: dict[str, int], pq_bytes_per_dim: float | None) -> float:
    """The recall@10 ceiling a plan's codes are expected to reach (1.0 for float vectors)."""
    codec = factory.rsplit(",", 1)[-1]
    if factory.startswith("PCA"):
        return PCA_RERANK_RECALL if int(params.get(RERANK_PARAM, 1)) > 1 else PCA_RECALL
    if codec in CODEC_RECALL:
        return CODEC_RECALL[codec]
    if pq_bytes_per_dim is not None:
        return pq_recall(pq_bytes_per_dim)
    return 1.0


def pq_recall(bytes_per_dim: float) -> float:
    return next(recall for floor, recall in PQ_RECALL if bytes_per_dim >= floor)
