"""An IVF index built in shards and merged answers as the same index built in one process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from lookalike import Collection
from lookalike.index import VectorIndex
from lookalike.planner import plan_index
from lookalike.sharded_build import add_shard, builds_in_shards, merge_shard, trained_copy
from seeded import IDS, PCA_IVF, K, clustered_unit_vectors, make_collection, recall_at_k

VECTORS = clustered_unit_vectors(len(IDS), seed=5)
QUERIES = clustered_unit_vectors(200, seed=6)


class InProcessAdder:
    """The shard adder's contract without a cluster: each shard added to a copy of the trained index, then merged."""

    where = "in this process"

    def __init__(self, shard_vectors: int) -> None:
        self.shard_vectors = shard_vectors
        self.shards = 0

    def added(self, trained: np.ndarray, metric: str, shards: Iterator[tuple[np.ndarray, np.ndarray]]) -> Iterator:
        built = [add_shard(trained, metric, ids, vectors) for ids, vectors in shards]
        for shard in reversed(built):  # shards arrive in any order
            self.shards += 1
            yield shard


def _trained(factory: str) -> VectorIndex:
    plan = plan_index(factory, len(VECTORS), VECTORS.shape[1], "cosine", {})
    index = VectorIndex.create(plan, VECTORS.shape[1])
    index.train(VECTORS[:2000])
    return index


@pytest.mark.parametrize("factory", ["IVF64,Flat", "IVF64_HNSW16,SQ8", PCA_IVF, "IVF64,PQ8"])
def test_shards_merged_give_the_results_of_one_build(factory: str) -> None:
    merged = _trained(factory)
    trained = trained_copy(merged)  # the same trained quantizer for both
    single = VectorIndex(faiss.deserialize_index(trained), "cosine")
    single.add(IDS, VECTORS)
    parts = np.array_split(np.arange(len(IDS)), 4)
    for part in parts[::-1]:
        assert merge_shard(merged, add_shard(trained, "cosine", IDS[part], VECTORS[part])) == len(part)

    assert merged.count == single.count == len(IDS)
    exact = VectorIndex.create(plan_index("flat", len(IDS), VECTORS.shape[1], "cosine", {}), VECTORS.shape[1])
    exact.add(IDS, VECTORS)
    _, truth = exact.search(QUERIES, K)
    for nprobe in (4, 16):
        one_scores, one_ids = single.search(QUERIES, K, nprobe=nprobe)
        scores, ids = merged.search(QUERIES, K, nprobe=nprobe)
        np.testing.assert_allclose(scores, one_scores, atol=1e-6)
        assert recall_at_k(ids, truth) == pytest.approx(recall_at_k(one_ids, truth), abs=0.002)
        assert (ids == one_ids).mean() > 0.99  # only tied scores may swap places


def test_only_trained_ivf_kinds_build_in_shards() -> None:
    assert builds_in_shards(_trained("IVF64,Flat")) and builds_in_shards(_trained(PCA_IVF))
    for kind in ("flat", "hnsw"):
        plan = plan_index(kind, len(IDS), VECTORS.shape[1], "cosine", {})
        assert not builds_in_shards(VectorIndex.create(plan, VECTORS.shape[1]))
    untrained = VectorIndex.create(plan_index("IVF64,Flat", len(IDS), 64, "cosine", {}), 64)
    assert not builds_in_shards(untrained)


def test_a_shard_of_another_kind_is_refused() -> None:
    index = _trained("IVF64,Flat")
    other = _trained("IVF64,SQ8")
    with pytest.raises(ValueError, match="trained copy"):
        merge_shard(index, add_shard(trained_copy(other), "cosine", IDS[:10], VECTORS[:10]))


def test_a_collection_rebuilt_in_shards_matches_one_rebuilt_in_one_process(tmp_path: Path) -> None:
    vectors = VECTORS[: len(IDS) // 2]
    make_collection(tmp_path / "one", vectors, "ivf", {"nlist": 32})
    make_collection(tmp_path / "sharded", vectors, "flat")
    notices: list[str] = []
    with Collection.open(tmp_path / "sharded", on_notice=notices.append) as collection:
        adder = InProcessAdder(shard_vectors=600)
        plan = collection.store.planned("ivf", options={"nlist": 32})
        collection.store.rebuild(plan, adder=adder, index_kind="ivf", index_options={"nlist": 32})
        assert adder.shards == 5
    assert f"{len(vectors)} vectors added in 5 shards in this process, merged here" in notices
    with Collection.open(tmp_path / "one") as one, Collection.open(tmp_path / "sharded") as sharded:
        assert sharded.current_plan().factory == one.current_plan().factory
        assert sharded.index().count == one.index().count == len(vectors)
        # Both trained on the same seeded sample: the same lists, so the same hits.
        mine = one.search_vectors(QUERIES[:50], [str(i) for i in range(50)], k=K, nprobe=8)
        theirs = sharded.search_vectors(QUERIES[:50], [str(i) for i in range(50)], k=K, nprobe=8)
        for a, b in zip(mine, theirs):
            assert [round(h.score, 5) for h in a.hits] == [round(h.score, 5) for h in b.hits]


def test_a_flat_kind_asked_to_build_in_shards_is_built_here_with_a_notice(tmp_path: Path) -> None:
    make_collection(tmp_path / "c", VECTORS[:500], "ivf", {"nlist": 8})
    notices: list[str] = []
    with Collection.open(tmp_path / "c", on_notice=notices.append) as collection:
        adder = InProcessAdder(shard_vectors=100)
        collection.store.rebuild(collection.store.planned("flat"), adder=adder, index_kind="flat")
        assert adder.shards == 0 and collection.store.load().count == 500
    assert any("only IVF kinds are built in shards" in notice for notice in notices)
