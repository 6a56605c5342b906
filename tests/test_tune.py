"""Tuning search speed against recall, and `auto` planning before building: on seeded synthetic vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lookalike import Collection
from lookalike.cli import main
from lookalike.index import VectorIndex
from lookalike.planner import plan_index
from lookalike.tune import choose, exact_neighbours, recall_at, tune_index
from seeded import DIM, make_collection, mixture


def test_tuning_reaches_the_target_stores_it_and_later_searches_use_it(ivf_folder: Path) -> None:
    with Collection.open(ivf_folder) as collection:
        result = collection.tune(target_recall=0.95, k=10, queries=200, latency_queries=10)
        assert result.param == "nprobe" and result.met and result.stored
        assert result.chosen.recall >= 0.95
        # the smallest nprobe that meets the target: the one before it does not
        earlier = [p for p in result.points if p.value < result.chosen.value]
        assert all(p.recall < 0.95 for p in earlier)
        assert json.loads(collection.catalog.get_meta("search_defaults")) == {"nprobe": result.chosen.value}
    manifest = json.loads((ivf_folder / "manifest.json").read_text())
    assert manifest["search_defaults"] == {"nprobe": result.chosen.value}

    with Collection.open(ivf_folder) as collection:
        index = collection.index()
        seen = []
        original = index.search

        def spy(queries, k, nprobe=None, ef_search=None, exclude=None):
            seen.append(nprobe)
            return original(queries, k, nprobe, ef_search, exclude)

        index.search = spy
        collection.search_ids([1, 2, 3], k=5)
    assert seen == [result.chosen.value]  # one Faiss call for the three queries, at the tuned nprobe


def test_recall_never_drops_as_nprobe_grows() -> None:
    vectors = mixture(6_000, seed=1)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    index = VectorIndex.create(plan_index("ivf", len(vectors), DIM, options={"nlist": 64}), DIM)
    index.train(vectors)
    index.add(ids, vectors)
    query_ids = ids[::60]
    queries = vectors[query_ids - 1]
    truth = exact_neighbours([(ids, vectors)], queries, query_ids, 10)
    param, points = tune_index(index, queries, query_ids, truth, k=10, latency_queries=3, full=True)
    recalls = [p.recall for p in points]
    assert param == "nprobe" and [p.value for p in points] == [1, 2, 4, 8, 16, 32, 64]
    assert all(later >= earlier for earlier, later in zip(recalls, recalls[1:])), recalls
    assert recalls[-1] == pytest.approx(1.0)  # every list probed: exact


def test_recall_grows_with_ef_search() -> None:
    vectors = mixture(4_000, seed=2)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    index = VectorIndex.create(plan_index("hnsw", len(vectors), DIM, options={"M": 8, "efConstruction": 20}), DIM)
    index.add(ids, vectors)
    query_ids = ids[::40]
    truth = exact_neighbours([(ids, vectors)], vectors[query_ids - 1], query_ids, 10)
    param, points = tune_index(
        index, vectors[query_ids - 1], query_ids, truth, latency_queries=3, values=[4, 16, 64, 256], full=True
    )
    recalls = [p.recall for p in points]
    assert param == "efSearch"
    assert all(later >= earlier - 0.005 for earlier, later in zip(recalls, recalls[1:])), recalls
    assert recalls[-1] > recalls[0]


def test_self_matches_are_left_out_of_truth_and_results() -> None:
    vectors = mixture(500, seed=3)
    ids = np.arange(10, 510, dtype=np.int64)
    truth = exact_neighbours([(ids[:200], vectors[:200]), (ids[200:], vectors[200:])], vectors[:5], ids[:5], 3)
    scores = vectors[:5] @ vectors.T
    np.fill_diagonal(scores[:, :5], -np.inf)
    assert truth.tolist() == ids[np.argsort(-scores, axis=1)[:, :3]].tolist()
    assert recall_at(truth, truth, 3) == 1.0


def test_a_target_nothing_reaches_stores_the_best_and_fails_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    make_collection(folder, mixture(3_000, seed=4), "IVF16,PQ8x4")
    result = CliRunner().invoke(main, ["tune", "--index", str(folder), "--target-recall", "1.0", "--queries", "50"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no setting reaches recall@10 1.0" in errors[0]
    with Collection.open(folder) as collection:
        stored = json.loads(collection.catalog.get_meta("search_defaults"))
        tuning = json.loads(collection.catalog.get_meta("search_tuning"))
    assert list(stored) == ["nprobe"] and tuning["met"] is False


def test_cli_tune_prints_the_frontier_and_writes_a_plot(ivf_folder: Path, tmp_path: Path) -> None:
    plot = tmp_path / "frontier.png"
    args = ["tune", "--index", str(ivf_folder), "--queries", "100", "--plot", str(plot), "--dry-run"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "nprobe" in result.output and "chosen: nprobe=" in result.output and "not stored" in result.output
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 300


def test_a_flat_index_has_nothing_to_tune(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    make_collection(folder, mixture(300, seed=5), "flat")
    result = CliRunner().invoke(main, ["tune", "--index", str(folder)])
    assert result.exit_code == 0 and "nothing to tune" in result.output


def test_choose_prefers_the_smallest_value_meeting_the_target() -> None:
    from lookalike.tune import OperatingPoint

    points = [OperatingPoint("nprobe", v, r, r, t, t, t) for v, r, t in [(1, 0.5, 0.1), (2, 0.96, 0.3), (4, 0.99, 0.2)]]
    assert choose(points, 0.95) == (points[1], True)
    assert choose(points, 0.995) == (points[2], False)
    assert choose([], 0.9) == (None, False)
