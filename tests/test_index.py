"""The Faiss layer on synthetic embeddings: plans, recall against exact search, ids, tombstones, files.

The data stand in for CNN embeddings of a photo collection: unit vectors drawn
from a Gaussian mixture on a low-dimensional subspace (clusters of similar
photos), seeded so every run sees the same collection.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookalike.errors import IndexSpecError
from lookalike.index import VectorIndex
from lookalike.planner import plan_index
from seeded import (
    COUNT,
    DIM,
    IDS,
    NOT_AN_ID,
    PCA_HNSW,
    PCA_IVF,
    REFINE,
    K,
    best_first,
    build,
    clustered_unit_vectors,
    recall_at_k,
)

# --- exact search is the reference -------------------------------------------


def test_flat_search_is_exact(built: Callable[[str], VectorIndex], vectors: np.ndarray, queries: np.ndarray) -> None:
    scores, ids = built("flat").search(queries, K)

    similarities = queries.astype(np.float64) @ vectors.T.astype(np.float64)
    best = np.argsort(-similarities, axis=1)[:, :K]
    assert recall_at_k(ids, IDS[best]) == 1.0
    np.testing.assert_allclose(scores, np.take_along_axis(similarities, best, axis=1), atol=1e-5)
    assert best_first(scores)


# --- every approximate index against exact search ----------------------------

RECALL_CASES = [
    # kind, search knob, values (increasing), floor at the largest value, floor with default params, tolerance.
    # Floors sit below what this data measures: ivf 1.0, ivfpq 0.52 (8 bytes a vector), PCA 0.80, refine 1.0,
    # hnsw 1.0 (at the largest value; the same with default params).
    # IVF-Flat scans a superset of lists as nprobe grows and ranks by exact scores, so recall cannot drop.
    pytest.param("ivf", "nprobe", [1, 2, 4, 8, 16, 32, 128], 0.99, 0.95, 0.0, id="ivf"),
    # PQ and PCA rank by approximate scores: a new candidate can push a true neighbour out; allow 1%.
    pytest.param("ivfpq", "nprobe", [1, 2, 4, 8, 16, 32, 128], 0.45, 0.45, 0.01, id="ivfpq"),
    pytest.param(PCA_IVF, "nprobe", [1, 2, 4, 8, 16, 32], 0.75, 0.75, 0.01, id="pca-ivf"),
    pytest.param(REFINE, "nprobe", [1, 2, 4, 8, 16, 64], 0.99, 0.95, 0.0, id="ivf-refine"),
    # The graph walk is approximate and the build multi-threaded: allow ties to move a little.
    pytest.param("hnsw", "ef_search", [10, 16, 32, 64, 128, 256], 0.99, 0.98, 0.005, id="hnsw"),
]


@pytest.mark.parametrize(("kind", "knob", "values", "floor", "default_floor", "tolerance"), RECALL_CASES)
def test_recall_against_exact_search(
    built: Callable[[str], VectorIndex],
    queries: np.ndarray,
    exact: np.ndarray,
    kind: str,
    knob: str,
    values: list[int],
    floor: float,
    default_floor: float,
    tolerance: float,
) -> None:
    index = built(kind)
    recalls = [recall_at_k(index.search(queries, K, **{knob: value})[1], exact) for value in values]

    assert all(later >= earlier - tolerance for earlier, later in zip(recalls, recalls[1:])), recalls
    assert recalls[-1] >= floor, recalls
    assert recalls[0] < recalls[-1], f"{knob} did not reach Faiss: {recalls}"
    assert recall_at_k(index.search(queries, K)[1], exact) >= default_floor


# --- ids -------------------------------------------------------------------------

ALL_KINDS = ["flat", "ivf", "ivfpq", "hnsw", PCA_IVF, PCA_HNSW, REFINE]
EXACT_SCORES = ["flat", "ivf", "hnsw", REFINE]  # store the vectors themselves: a photo finds itself first


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_results_are_the_callers_ids(built: Callable[[str], VectorIndex], vectors: np.ndarray, kind: str) -> None:
    rows = np.arange(0, COUNT, 100)
    scores, ids = built(kind).search(vectors[rows], K)

    assert ids.shape == (len(rows), K)
    assert np.isin(ids, IDS).all()
    if kind in EXACT_SCORES:
        assert (ids[:, 0] == IDS[rows]).all()
        stored = vectors[(ids - 7) // 3]  # the vector each hit's id was added with
        np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", vectors[rows], stored), atol=1e-5)
    else:  # compressed or projected vectors: a photo finds itself among its first hits
        assert np.mean([IDS[row] in hits for row, hits in zip(rows, ids)]) >= 0.9


# --- tombstones --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw", PCA_IVF, PCA_HNSW, REFINE])
def test_excluded_ids_never_come_back(built: Callable[[str], VectorIndex], queries: np.ndarray, kind: str) -> None:
    index = built(kind)
    plain = index.search(queries, K)[1]
    # Tombstone every other hit of every query (the best one included), some ids far away, and an unknown id.
    tombstones = np.concatenate([np.unique(plain[:, ::2]), IDS[::50], [NOT_AN_ID]])

    scores, ids = index.search(queries, K, exclude=tombstones)

    assert not np.isin(ids, tombstones).any()
    assert (ids >= 0).all()  # still K results: plenty remain
    assert best_first(scores)
    for plain_row, row in zip(plain, ids):
        survivors = [i for i in plain_row if i not in tombstones]
        assert list(row[: len(survivors)]) == survivors  # the rest keep their order, and move up


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_exclusion_equals_exact_search_over_the_remaining_ids(data: st.DataObject) -> None:
    vectors, query = clustered_unit_vectors(300, seed=5), clustered_unit_vectors(1, seed=6)
    index = build("flat", vectors, IDS[:300])
    rows = data.draw(st.lists(st.integers(0, 299), max_size=300, unique=True))
    k = data.draw(st.integers(1, 320))

    scores, ids = index.search(query, k, exclude=IDS[rows])

    remaining = np.setdiff1d(np.arange(300), rows)
    best = remaining[np.argsort(-(vectors[remaining] @ query[0]), kind="stable")][:k]
    assert set(ids[0, : len(best)]) == set(IDS[best])
    assert (ids[0, len(best) :] == -1).all()
    assert np.isneginf(scores[0, len(best) :]).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw", PCA_HNSW])
def test_when_tombstones_leave_fewer_than_k_the_rest_are_empty_slots(kind: str) -> None:
    vectors = clustered_unit_vectors(200, seed=7)
    ids = 1000 + np.arange(200)
    index = build(kind, vectors, ids)

    scores, found = index.search(vectors[:3], 20, exclude=ids[5:])

    assert found.shape == scores.shape == (3, 20)
    assert (found[:, 0] == ids[:3]).all()  # each photo still finds itself
    for row_scores, row in zip(scores, found):
        hits = row[row >= 0]
        # Flat finds all 5 survivors; a graph walk through 195 tombstones may miss some of them.
        assert len(hits) == 5 if kind == "flat" else 3 <= len(hits) <= 5
        assert set(hits) <= set(ids[:5])
        assert (row[len(hits) :] == -1).all()  # hits first, then empty slots
        assert np.isfinite(row_scores[: len(hits)]).all()
        assert np.isneginf(row_scores[len(hits) :]).all()  # the worst possible score, so best-first still holds
    assert best_first(scores)


# --- metrics ---------------------------------------------------------------------


def test_l2_and_cosine_rank_unit_vectors_alike(vectors: np.ndarray, queries: np.ndarray) -> None:
    cosine_scores, cosine_ids = build("flat", vectors, IDS, metric="cosine").search(queries, K)
    l2_scores, l2_ids = build("flat", vectors, IDS, metric="l2").search(queries, K)

    assert (l2_ids == cosine_ids).all()
    np.testing.assert_allclose(l2_scores, cosine_scores, atol=1e-4)  # 1 - d/2 is the inner product
    np.testing.assert_allclose(l2_scores, np.einsum("qd,qkd->qk", queries, vectors[(l2_ids - 7) // 3]), atol=1e-4)


# --- k beyond the collection ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw", PCA_HNSW])
def test_k_larger_than_the_collection_pads_with_empty_slots(kind: str) -> None:
    vectors = clustered_unit_vectors(40, seed=8)
    ids = 500 + 2 * np.arange(40)
    index = build(kind, vectors, ids)

    for exclude in (None, ids[:10]):
        scores, found = index.search(vectors[:4], 100, exclude=exclude)
        remaining = set(ids) - set(() if exclude is None else exclude)

        assert found.shape == scores.shape == (4, 100)
        assert all(set(row[: len(remaining)]) == remaining for row in found)  # every vector, once
        assert (found[:, len(remaining) :] == -1).all()
        assert np.isfinite(scores[:, : len(remaining)]).all()
        assert np.isneginf(scores[:, len(remaining) :]).all()


def test_an_empty_index_returns_only_empty_slots() -> None:
    index = VectorIndex.create(plan_index("flat", 0, DIM), DIM)

    scores, ids = index.search(clustered_unit_vectors(2, seed=9), 5)

    assert index.count == 0
    assert (ids == -1).all() and ids.shape == (2, 5)
    assert np.isneginf(scores).all()


# --- range search ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_range_search_returns_every_vector_above_the_score(
    built: Callable[[str], VectorIndex], vectors: np.ndarray, queries: np.ndarray, kind: str
) -> None:
    threshold = 0.8
    exact_scores = queries[:20] @ vectors.T
    found = built(kind).range_search(queries[:20], threshold)
    for row, (scores, ids) in enumerate(found):
        want = set(IDS[exact_scores[row] >= threshold].tolist())
        assert (scores >= threshold - 1e-5).all() and bool((scores[:-1] >= scores[1:]).all())
        if kind == "flat":
            assert set(ids.tolist()) == want
        else:  # IVF visits only nprobe lists: a subset, never anything below the score
            assert set(ids.tolist()) <= want


def test_range_search_leaves_out_tombstones_and_rejects_kinds_without_it(
    built: Callable[[str], VectorIndex], vectors: np.ndarray, queries: np.ndarray
) -> None:
    scores, ids = built("flat").range_search(queries[:1], 0.5)[0]
    assert len(ids) > 2
    _, kept = built("flat").range_search(queries[:1], 0.5, exclude=ids[:2])[0]
    assert set(kept.tolist()) == set(ids[2:].tolist())
    with pytest.raises(IndexSpecError, match="no range search"):
        build("NSG16,Flat", vectors[:500], IDS[:500]).range_search(queries[:1], 0.5)
