"""Neighbour lists for duplicate grouping: one Faiss k-NN search over the stored embeddings, read both ways.

Memory is O(N x k), never N x N: exact (flat) search up to 10,000 images, beyond that IVF on a PCA projection
with the similarities recomputed on the full vectors (docs/benchmarks.md, "Duplicates", measures how many close
neighbours it misses).
"""

from __future__ import annotations

import numpy as np

DEFAULT_NEIGHBOURS = 32
EXACT_SEARCH_UP_TO = 10_000
_SEARCH_BATCH = 4096
_PROJECTED_DIM = 256


def nearest_neighbours(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product k-NN of every row among the rows: (similarities, row numbers), N x k each, -1 if none.

    Exact (flat) up to 10,000 vectors. Beyond, the search runs on a 256-d PCA projection with IVF-Flat
    (2 x sqrt(N) lists, 8 searched): five times fewer multiplications per distance, and duplicates sit much
    closer together than lists are wide (docs/benchmarks.md, "Duplicates", measures how many close
    neighbours it misses). The similarities returned are always recomputed on the full vectors.
    """
    import faiss

    count, dim = vectors.shape
    k = max(1, min(k + 1, count))  # +1: every vector finds itself first
    if count <= EXACT_SEARCH_UP_TO:
        index, queries = faiss.IndexFlatIP(dim), vectors
        index.add(vectors)
    else:
        index, queries = _approximate_index(vectors)
    sims = np.empty((count, k), dtype=np.float32)
    found = np.empty((count, k), dtype=np.int64)
    for start in range(0, count, _SEARCH_BATCH):
        sims[start : start + _SEARCH_BATCH], found[start : start + _SEARCH_BATCH] = index.search(
            queries[start : start + _SEARCH_BATCH], k
        )
    if queries is not vectors:
        _exact_similarities(vectors, sims, found)
    return sims, found


def _approximate_index(vectors: np.ndarray) -> tuple[object, np.ndarray]:
    """An IVF-Flat index over a PCA projection of `vectors`, filled, and the projected vectors."""
    import faiss

    count, dim = vectors.shape
    nlist = int(2 * np.sqrt(count))
    sample = vectors[np.sort(np.random.default_rng(1338).choice(count, size=min(count, nlist * 40), replace=False))]
    pca = faiss.PCAMatrix(dim, min(dim, _PROJECTED_DIM))
    pca.train(sample)
    projected = np.empty((count, pca.d_out), dtype=np.float32)
    for start in range(0, count, _SEARCH_BATCH):
        projected[start : start + _SEARCH_BATCH] = pca.apply(vectors[start : start + _SEARCH_BATCH])
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(pca.d_out), pca.d_out, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10  # coarse lists only need to be roughly right: 10 k-means rounds, not 25
    index.train(pca.apply(sample))
    index.nprobe = 8
    index.add(projected)
    return index, projected


def _exact_similarities(vectors: np.ndarray, sims: np.ndarray, found: np.ndarray) -> None:
    """Replace approximate similarities by exact ones (in place), each row re-sorted best first."""
    for start in range(0, len(vectors), 512):
        rows = slice(start, start + 512)
        neighbours = vectors[np.maximum(found[rows], 0)]
        exact = np.einsum("nd,nkd->nk", vectors[rows], neighbours)
        exact[found[rows] < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")
        sims[rows] = np.take_along_axis(exact, order, axis=1)
        found[rows] = np.take_along_axis(found[rows], order, axis=1)


def neighbour_lists(
    positions: np.ndarray, sims: np.ndarray, found: np.ndarray
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each position's neighbour list joined with the lists it appears in, best first.

    k-NN is not symmetric: among a crowd of similar drawings, a copy can be in nobody's top k but have its
    original in its own. Grouping looks at a leader's list, so the leader must see who lists it too.
    """
    count, k = found.shape
    sources = np.repeat(positions, k)
    targets, weights = found.ravel(), sims.ravel()
    keep = (targets >= 0) & (targets != sources)
    sources, targets, weights = sources[keep], targets[keep], weights[keep]
    edges_from = np.concatenate([sources, targets])
    edges_to = np.concatenate([targets, sources])
    edge_sims = np.concatenate([weights, weights])
    order = np.lexsort((-edge_sims, edges_to, edges_from))
    edges_from, edges_to, edge_sims = edges_from[order], edges_to[order], edge_sims[order]
    first = np.ones(len(order), dtype=bool)  # a pair listed both ways is kept once
    first[1:] = (edges_from[1:] != edges_from[:-1]) | (edges_to[1:] != edges_to[:-1])
    edges_from, edges_to, edge_sims = edges_from[first], edges_to[first], edge_sims[first]
    by_sim = np.lexsort((edges_to, -edge_sims, edges_from))  # within a position: best first, then by row
    edges_from, edges_to, edge_sims = edges_from[by_sim], edges_to[by_sim], edge_sims[by_sim]
    starts = np.searchsorted(edges_from, positions)
    ends = np.searchsorted(edges_from, positions, side="right")
    return {int(p): (edge_sims[a:b], edges_to[a:b]) for p, a, b in zip(positions, starts, ends)}
