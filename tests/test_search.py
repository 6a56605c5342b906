"""The search pipeline's seams: the one limit on k, queries of several views fused per image, and stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection, InvalidArgumentError, Query
from lookalike.demo import SAMPLE_PHOTOS, TRANSFORMS, sample_photo
from lookalike.search import MAX_K, Hit, check_k, fuse_views


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1])
def test_k_outside_its_range_is_a_bad_argument(k: int) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_k(k)
    assert caught.value.argument == "k"


def test_views_are_fused_per_image_keeping_the_best_score() -> None:
    # Query 0 has two views, query 1 one view; image 5 is found by both views of query 0.
    scores = np.array([[0.9, 0.5, 0.4], [0.8, 0.7, 0.1], [0.6, 0.3, -np.inf]], dtype=np.float32)
    ids = np.array([[5, 6, 7], [8, 5, 6], [9, 5, -1]], dtype=np.int64)
    fused_scores, fused_ids = fuse_views(scores, ids, [2, 1], k=3)
    assert fused_ids.tolist() == [[5, 8, 6], [9, 5, -1]]
    assert fused_scores[0].tolist() == pytest.approx([0.9, 0.8, 0.5])
    assert fused_scores[1, 2] == -np.inf


def test_views_can_belong_to_one_image_through_an_owner_map() -> None:
    scores = np.array([[0.9, 0.8, 0.7]], dtype=np.float32)
    ids = np.array([[10, 11, 20]], dtype=np.int64)  # vectors 10 and 11 are two regions of image 1
    _, fused_ids = fuse_views(scores, ids, [1], k=2, owners=lambda vector_ids: vector_ids // 10)
    assert fused_ids.tolist() == [[1, 2]]


@pytest.fixture(scope="module")
def plumbing_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    photos = tmp_path_factory.mktemp("photos")
    for name in SAMPLE_PHOTOS:
        sample_photo(name).save(photos / f"{name}.png")
    folder = tmp_path_factory.mktemp("idx") / "idx"
    with Collection.create(folder, embedder="colour-layout") as collection:
        collection.add_folder(photos)
    return folder


def test_a_query_with_several_views_finds_what_each_view_finds(plumbing_collection: Path, tmp_path: Path) -> None:
    with Collection.open(plumbing_collection) as collection:
        vectors = collection.search_ids([1, 2], k=1)
        first, second = (collection.catalog.embedding(result.query_id) for result in vectors)
        [result] = collection.search_queries([Query("both", np.stack([first, second]))], k=2)
    assert {hit.id for hit in result.hits} == {1, 2}


def test_a_stage_sees_the_query_source_and_reranks_the_hits(plumbing_collection: Path, tmp_path: Path) -> None:
    query = tmp_path / "query.png"
    TRANSFORMS["colour"](sample_photo("chelsea")).save(query)
    seen: list[object] = []

    def reverse(query: Query, hits: list[Hit]) -> list[Hit]:
        seen.append(query.source)
        return hits[::-1]

    with Collection.open(plumbing_collection) as collection:
        plain = collection.search([query], k=3)[0].hits
        collection.stages.append(reverse)
        staged = collection.search([query], k=3)[0].hits
    assert seen == [str(query)]
    assert [hit.id for hit in staged] == [hit.id for hit in plain][::-1]
