"""Exact re-ranking: a compressed index's candidates re-scored with the embeddings the catalog stores.

A memory-bound index (PCA, 6-bit or PQ codes) ranks by approximate distances, so some true neighbours fall
just below the k-th place. Fetching k x factor candidates and re-scoring them by exact cosine with the float
vectors stored in the catalog - which is on disk, not in RAM - brings them back (see the "Search at scale"
section of docs/benchmarks.md), at the cost of reading k x factor rows per query. The index plan carries
the factor as `params["rerank"]`; the collection's search applies it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .catalog import Catalog

RERANK_PARAM = "rerank"  # key of the re-ranking factor in an IndexPlan's params


def rerank_factor(params: dict[str, int] | None) -> int:
    """The plan's re-ranking factor: candidates fetched per result wanted (1 means no re-ranking)."""
    return max(1, int((params or {}).get(RERANK_PARAM, 1)))


def rerank(catalog: Catalog, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's candidates `ids` re-scored by exact cosine with their stored vectors: the k best, best first.

    Returns (scores, ids) of shape (len(queries), k) like VectorIndex.search: missing slots have id -1 and
    score -inf. Candidates without an intact stored vector are dropped (a stale or damaged row is never ranked).
    """
    known, vectors = catalog.embeddings_of(np.unique(ids[ids >= 0]).tolist())
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    if len(known) == 0 or vectors.shape[1] != queries.shape[1]:
        return out_scores, out_ids
    for row, (query, candidates) in enumerate(zip(np.asarray(queries, dtype=np.float32), ids)):
        candidates = np.unique(candidates[candidates >= 0])
        at = np.searchsorted(known, candidates)
        present = at < len(known)
        present[present] = known[at[present]] == candidates[present]
        rows = at[present]
        scores = vectors[rows] @ query
        best = np.lexsort((known[rows], -scores))[:k]  # ties: lower id first, so the order is deterministic
        out_ids[row, : len(best)] = known[rows][best]
        out_scores[row, : len(best)] = scores[best]
    return out_scores, out_ids
