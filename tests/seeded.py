"""Seeded vectors and indexes for the tests of the index, the planner, the store and tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookalike import Collection
from lookalike.catalog import NewImage
from lookalike.index import VectorIndex
from lookalike.planner import plan_index

DIM = 64
COUNT = 5_000
K = 10
IDS = 7 + 3 * np.arange(COUNT, dtype=np.int64)  # catalog ids: not 0..n-1, as after deletions
NOT_AN_ID = 8  # never added: 8 is not of the form 7 + 3i

# Factory strings the tests use besides the kind names.
PCA_IVF = "PCA32,IVF32,Flat"
PCA_HNSW = "PCA32,HNSW16"  # a PreTransform under an IDMap: tombstones are filtered by over-fetching
REFINE = "IVF64,Flat,RFlat"  # an IndexRefine over IVF: ids through an IDMap, nprobe through the refine


def clustered_unit_vectors(count: int, seed: int, dim: int = DIM) -> np.ndarray:
    """`count` unit vectors from one fixed mixture of 32 clusters on a 24-dimensional subspace."""
    shape = np.random.default_rng(1338)
    basis = np.linalg.qr(shape.standard_normal((dim, 24)))[0]
    centres = shape.standard_normal((32, 24))
    rng = np.random.default_rng(seed)
    latent = centres[rng.integers(len(centres), size=count)] + 0.5 * rng.standard_normal((count, 24))
    vectors = latent @ basis.T + 0.05 * rng.standard_normal((count, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def build(kind: str, vectors: np.ndarray, ids: np.ndarray, metric: str = "cosine", **options: int) -> VectorIndex:
    """Plan, create, train and fill an index the way the collection does."""
    plan = plan_index(kind, len(vectors), vectors.shape[1], metric, options)
    index = VectorIndex.create(plan, vectors.shape[1])
    if not index.is_trained:
        index.train(vectors[: plan.train_size])
    index.add(ids, vectors)
    return index


def best_first(scores: np.ndarray) -> bool:
    """Every row sorted from the highest score down (empty slots, -inf, last)."""
    return bool((scores[:, :-1] >= scores[:, 1:]).all())


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of `truth` present in the same row of `found`."""
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def mixture(count: int, dim: int = DIM, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors from a seeded Gaussian mixture (clustered, like image embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    picks = rng.integers(0, clusters, size=count)
    vectors = centres[picks] + 0.6 * rng.standard_normal((count, dim)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def make_collection(folder: Path, vectors: np.ndarray, kind: str, options: dict | None = None) -> None:
    with Collection.create(folder) as collection:
        collection.catalog.set_meta({"dim": str(vectors.shape[1])})
        collection.catalog.add_indexed(
            [NewImage(f"/photos/{i:06}.jpg", 1, 1, f"hash{i}", 1, 1, v) for i, v in enumerate(vectors)]
        )
        collection.reindex(kind, options=options)
