"""Exact re-ranking of a compressed index's candidates with the catalog's stored vectors, on seeded data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection
from lookalike.planner import estimate_plan, plan_auto
from lookalike.rerank import RERANK_PARAM, rerank
from seeded import K, clustered_unit_vectors, make_collection, mixture, recall_at_k

COARSE = "IVF32,SQ4"  # 4-bit codes on 64-d vectors: a recall ceiling well below 1 that re-ranking lifts
FACTOR = 4


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return mixture(4_000, seed=21), mixture(60, seed=22)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, data: tuple[np.ndarray, np.ndarray]) -> dict[str, Path]:
    vectors, _ = data
    out = {}
    for name, options in (("plain", {}), ("reranked", {RERANK_PARAM: FACTOR})):
        out[name] = tmp_path_factory.mktemp(name) / "collection"
        make_collection(out[name], vectors, COARSE, options)
    return out


def _search(folder: Path, queries: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    with Collection.open(folder) as collection:
        results = collection.search_vectors(queries, [f"q{i}" for i in range(len(queries))], k, nprobe=32)
    ids = np.array([[hit.id for hit in r.hits] for r in results])
    scores = np.array([[hit.score for hit in r.hits] for r in results])
    return ids, scores


def _exact(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k] + 1  # catalog ids start at 1


def test_reranking_raises_recall_towards_exact_search(
    folders: dict[Path, str], data: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors, queries = data
    truth = _exact(vectors, queries)
    plain = recall_at_k(_search(folders["plain"], queries)[0], truth)
    reranked = recall_at_k(_search(folders["reranked"], queries)[0], truth)

    assert plain < 0.95  # the codes alone miss neighbours, or this test shows nothing
    assert reranked >= plain + 0.03
    assert reranked >= 0.95


def test_reranked_hits_are_the_candidates_in_exact_order_with_exact_scores(
    folders: dict[Path, str], data: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors, queries = data
    ids, scores = _search(folders["reranked"], queries)
    with Collection.open(folders["reranked"]) as collection:
        _, candidates = collection.index().search(queries, K * FACTOR, nprobe=32)
    for row, query in enumerate(queries):
        exact = vectors[candidates[row] - 1] @ query
        expected = candidates[row][np.argsort(-exact, kind="stable")[:K]]
        assert ids[row].tolist() == expected.tolist()
        assert scores[row] == pytest.approx(vectors[ids[row] - 1] @ query, abs=1e-5)


def test_candidates_without_a_stored_vector_are_dropped_and_the_rest_padded(folders: dict[Path, str]) -> None:
    with Collection.open(folders["plain"]) as collection:
        query = collection.catalog.require_embedding(5)[None]
        scores, ids = rerank(collection.catalog, query, np.array([[5, 10**9, -1, 7]]), 3)

    assert ids.tolist() == [[5, 7, -1]]  # 10**9 is no catalog id; -1 is an empty slot
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5) and scores[0, 2] == -np.inf


def test_auto_under_a_tight_budget_builds_a_reranked_pca_plan_that_searches_well(tmp_path: Path) -> None:
    # Variance in a few directions, as in real embeddings: PCA keeps the neighbours' order roughly.
    dim, count = 640, 3_000
    vectors, queries = clustered_unit_vectors(count, 31, dim), clustered_unit_vectors(40, 32, dim)
    budget = 1_200_000  # float vectors need 7.8 MB, SQ4 codes 1.1 MB (expected recall 0.75)
    plan = plan_auto(count, dim, max_memory=budget)

    assert plan.factory.startswith("PCAR128,") and plan.params[RERANK_PARAM] > 1 and plan.metric == "l2"
    assert estimate_plan(plan, count, dim).memory_bytes <= budget
    folder = tmp_path / "collection"
    make_collection(folder, vectors, "auto", {"max_memory_bytes": budget})
    ids, scores = _search(folder, queries)
    with Collection.open(folder) as collection:
        _, plain = collection.index().search(queries, K)  # the PCA codes alone
    truth = _exact(vectors, queries)
    assert recall_at_k(ids, truth) >= max(0.95, recall_at_k(plain, truth) + 0.03)
    assert scores[:, 0] == pytest.approx(np.max(queries @ vectors.T, axis=1), abs=1e-5)  # cosines, not L2


def test_tune_measures_a_reranked_plan_after_reranking(folders: dict[str, Path]) -> None:
    """Tuning sees the recall searches get: a re-ranked plan's, not that of its codes alone."""
    recalls = {}
    for name in ("plain", "reranked"):
        with Collection.open(folders[name]) as collection:
            result = collection.tune(target_recall=0.99, queries=60, store=False, full=True)
        recalls[name] = max(point.recall for point in result.points)
    assert recalls["plain"] < 0.95 and recalls["reranked"] >= recalls["plain"] + 0.03
