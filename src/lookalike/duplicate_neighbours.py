"""Neighbour lists for duplicate grouping: one Faiss k-NN search over the stored embeddings, read both ways.

Memory is O(N x k), never N x N: exact (flat) search up to 10,000 images, beyond that IVF on a PCA projection
with the similarities recomputed on the full vectors (docs/benchmarks.md, "Duplicates", measures how many close
neighbours it misses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_NEIGHBOURS = 32
THUMBNAIL_NEIGHBOURS = 8  # per heavily compressed JPEG, found by its pixels (`thumbnail_neighbours`)
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


def _approximate_index(vectors: np.ndarray) -> tuple[Any, np.ndarray]:
    """An IVF-Flat index over a PCA projection of `vectors`, filled, and the projected vectors."""
    import faiss

    count, dim = vectors.shape
    sample = vectors[_training_rows(count)]
    pca = faiss.PCAMatrix(dim, min(dim, _PROJECTED_DIM))
    pca.train(sample)
    projected = np.empty((count, pca.d_out), dtype=np.float32)
    for start in range(0, count, _SEARCH_BATCH):
        projected[start : start + _SEARCH_BATCH] = pca.apply(vectors[start : start + _SEARCH_BATCH])
    index = _trained_ivf(pca.apply(sample), count)
    index.add(projected)
    return index, projected


def _training_rows(count: int) -> np.ndarray:
    """The rows (ascending, seeded) an IVF index over `count` vectors is trained on: 40 per list."""
    size = min(count, _lists(count) * 40)
    return np.sort(np.random.default_rng(1338).choice(count, size=size, replace=False))


def _lists(count: int) -> int:
    return int(2 * np.sqrt(count))


def _trained_ivf(sample: np.ndarray, count: int) -> Any:  # a Faiss index (Faiss has no type hints)
    """An inner-product IVF-Flat index for `count` vectors, trained on `sample`: 2 x sqrt(N) lists, 8 searched."""
    import faiss

    dim = sample.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, _lists(count), faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10  # coarse lists only need to be roughly right: 10 k-means rounds, not 25
    index.train(sample)
    index.nprobe = 8
    return index


def _exact_similarities(vectors: np.ndarray, sims: np.ndarray, found: np.ndarray) -> None:
    """Replace approximate similarities by exact ones (in place), each row re-sorted best first."""
    # 64 rows at a time: their gathered neighbours (64 x k x dim floats, 10 MiB for Lite0) stay in the CPU's cache
    # while they are multiplied; 512 at a time took 1.5x as long at 100,000 files (same results).
    for start in range(0, len(vectors), 64):
        rows = slice(start, start + 64)
        wanted = np.maximum(found[rows], 0)
        neighbours = np.take(vectors, wanted.ravel(), axis=0).reshape(*wanted.shape, vectors.shape[1])
        exact = np.einsum("nd,nkd->nk", vectors[rows], neighbours)
        exact[found[rows] < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")
        sims[rows] = np.take_along_axis(exact, order, axis=1)
        found[rows] = np.take_along_axis(found[rows], order, axis=1)


def thumbnail_neighbours(
    queries: np.ndarray, positions: np.ndarray, signatures: Sequence[bytes | None], vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, neighbour, embedding cosine) of each query position's nearest among `positions` by its pixels:
    the Pearson correlation of 8 x 8 grey thumbnails (64 dimensions; exact search up to 10,000 files, IVF
    beyond).

    A JPEG compressed hard enough to show its blocks moves far from its original in embedding (a photo's
    cosine fell to 0.26 on the benchmark), so the embedding k-NN can miss the pair; its thumbnail keeps the
    tones and layout. Only such files are queried, so this costs a fraction of the main search.
    """
    signed = np.asarray([p for p in positions.tolist() if signatures[p] is not None], dtype=np.int64)
    asked = np.asarray([p for p in queries.tolist() if signatures[p] is not None], dtype=np.int64)
    if len(asked) == 0 or len(signed) < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float32)
    thumbnails = np.concatenate(
        [
            _small_thumbnails([signatures[p] for p in signed[start : start + _SEARCH_BATCH]])
            for start in range(0, len(signed), _SEARCH_BATCH)
        ]
    )
    index = _thumbnail_index(thumbnails)
    k = min(THUMBNAIL_NEIGHBOURS + 1, len(signed))
    _, rows = index.search(_small_thumbnails([signatures[p] for p in asked]), k)
    sources = np.repeat(asked, k)
    targets = np.where(rows >= 0, signed[np.maximum(rows, 0)], -1).ravel()
    keep = (targets >= 0) & (targets != sources)
    sources, targets = sources[keep], targets[keep]
    return sources, targets, np.einsum("nd,nd->n", vectors[sources], vectors[targets]).astype(np.float32)


_THUMBNAIL_SIDE = 8


def _thumbnail_index(thumbnails: np.ndarray) -> Any:  # a Faiss index (Faiss has no type hints)
    """A filled inner-product index of the thumbnails: flat up to EXACT_SEARCH_UP_TO, else IVF-Flat with
    2 x sqrt(N) lists, 8 searched. Forced onto the benchmark's sets, IVF found the original among the 8
    neighbours of as many heavy JPEGs as the exact search (150 of 151 and 79 of 79)."""
    import faiss

    count, dim = thumbnails.shape
    if count <= EXACT_SEARCH_UP_TO:
        index = faiss.IndexFlatIP(dim)
    else:
        index = _trained_ivf(thumbnails[_training_rows(count)], count)
    index.add(thumbnails)
    return index


def _small_thumbnails(signatures: Sequence[bytes | None]) -> np.ndarray:
    """8 x 8 grey thumbnails (block means of the 32 x 32 ones), standardised: inner product = correlation."""
    from .signatures import SIGNATURE_SIDE, signature_array

    factor = SIGNATURE_SIDE // _THUMBNAIL_SIDE
    grey = np.stack([signature_array(signature) for signature in signatures if signature is not None])
    small = grey.reshape(-1, _THUMBNAIL_SIDE, factor, _THUMBNAIL_SIDE, factor).mean(axis=(2, 4)).reshape(len(grey), -1)
    small -= small.mean(axis=1, keepdims=True)
    small /= np.maximum(np.linalg.norm(small, axis=1, keepdims=True), 1e-6)
    return np.ascontiguousarray(small, dtype=np.float32)


def neighbour_lists(
    positions: np.ndarray,
    sims: np.ndarray,
    found: np.ndarray,
    extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each position's neighbour list joined with the lists it appears in, best first; `extra` adds
    (source, target, similarity) pairs found otherwise (`thumbnail_neighbours`).

    k-NN is not symmetric: among a crowd of similar drawings, a copy can be in nobody's top k but have its
    original in its own. Grouping looks at a leader's list, so the leader must see who lists it too.
    """
    count, k = found.shape
    sources = np.repeat(positions, k)
    targets, weights = found.ravel(), sims.ravel()
    if extra is not None:
        sources = np.concatenate([sources, extra[0]])
        targets = np.concatenate([targets, extra[1]])
        weights = np.concatenate([weights, extra[2]])
    keep = (targets >= 0) & (targets != sources)
    sources, targets, weights = sources[keep].astype(np.int64), targets[keep].astype(np.int64), weights[keep]
    edges_from = np.concatenate([sources, targets])
    edges_to = np.concatenate([targets, sources])
    edge_sims = np.concatenate([weights, weights]).astype(np.float32) + np.float32(0.0)  # -0.0 becomes 0.0
    # Sorting single int64 keys, not lexsorting three columns twice (3x faster at 100,000 files, same lists).
    pair = edges_from * (int(max(edges_from.max(initial=0), edges_to.max(initial=0))) + 1) + edges_to
    order = np.argsort(pair, kind="stable")
    pair, edges_from, edges_to, edge_sims = pair[order], edges_from[order], edges_to[order], edge_sims[order]
    first = np.ones(len(order), dtype=bool)  # a pair listed both ways is kept once, with its best similarity
    first[1:] = pair[1:] != pair[:-1]
    starts_of_pairs = np.flatnonzero(first)
    best = np.maximum.reduceat(edge_sims, starts_of_pairs) if len(starts_of_pairs) else edge_sims
    edges_from, edges_to, edge_sims = edges_from[first], edges_to[first], best
    # Within a position, best first, then by row: the rows are in order already, so a stable sort on
    # (position, descending similarity) keeps them so among equal similarities.
    by_sim = np.argsort((edges_from << 32) | _descending_bits(edge_sims), kind="stable")
    edges_from, edges_to, edge_sims = edges_from[by_sim], edges_to[by_sim], edge_sims[by_sim]
    starts = np.searchsorted(edges_from, positions)
    ends = np.searchsorted(edges_from, positions, side="right")
    return {int(p): (edge_sims[a:b], edges_to[a:b]) for p, a, b in zip(positions, starts, ends)}


def _descending_bits(values: np.ndarray) -> np.ndarray:
    """float32 values as int64 keys in 0..2^32 that sort in the values' descending order."""
    bits = values.view(np.uint32).astype(np.int64)
    ascending = np.where(bits >= 1 << 31, (1 << 32) - 1 - bits, bits + (1 << 31))  # negatives reversed below
    return (1 << 32) - 1 - ascending
