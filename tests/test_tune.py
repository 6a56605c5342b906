"""Tuning search speed against recall, and `auto` planning before building: on seeded synthetic vectors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from lookalike import Collection
from lookalike.catalog import NewImage
from lookalike.cli import main
from lookalike.errors import IndexSpecError
from lookalike.index import IndexState, VectorIndex, estimate_plan, plan_auto, plan_index
from lookalike.tune import choose, exact_neighbours, recall_at, tune_collection, tune_index, write_plot

DIM = 64


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


@pytest.fixture(scope="module")
def ivf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tune") / "idx"
    make_collection(folder, mixture(20_000), "ivf", {"nlist": 128})
    return folder


def test_tuning_reaches_the_target_stores_it_and_later_searches_use_it(ivf_folder: Path) -> None:
    with Collection.open(ivf_folder) as collection:
        result = tune_collection(collection, target_recall=0.95, k=10, queries=200, latency_queries=10)
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


def test_write_plot_handles_a_single_point(tmp_path: Path) -> None:
    from lookalike.tune import OperatingPoint, TuneResult

    point = OperatingPoint("efSearch", 16, 0.9, 0.9, 0.5, 0.6, 0.1)
    write_plot(TuneResult("HNSW32,Flat", 100, 10, 10, 0.95, "efSearch", [point], point), tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


# --- auto: planning before building -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "budget", "expected"),
    [
        (300, None, "Flat"),
        (2_000, None, "IVF51,Flat"),
        (5_000, None, "IVF128_HNSW32,Flat"),
        (5_000, 300_000, "SQ4"),
        (300, 25_000, "SQ4"),
    ],
)
def test_auto_builds_a_valid_loadable_index_in_every_band(
    count: int, budget: int | None, expected: str, tmp_path: Path
) -> None:
    plan = plan_auto(count, DIM, max_memory=budget, target_recall=0.8, flat_limit=500, large_limit=3_000)
    assert plan.factory.endswith(expected) and plan.reason
    estimate = estimate_plan(plan, count, DIM)
    if budget:
        assert estimate.memory_bytes <= budget
    vectors = mixture(count, seed=6)
    ids = np.arange(1, count + 1, dtype=np.int64)
    index = VectorIndex.create(plan, DIM)
    index.train(vectors[: plan.train_size] if plan.train_size else vectors)
    index.add(ids, vectors)
    path = tmp_path / "index.faiss"
    state = IndexState(index.save(path), count, DIM, count)
    for mmap in (False, True):
        loaded = VectorIndex.load(path, state, "cosine", mmap=mmap)
        _, found = loaded.search(vectors[:20], 1, nprobe=loaded.default_params().get("nprobe"))
        assert np.mean(found[:, 0] == ids[:20]) >= 0.8


@pytest.mark.parametrize("count", [25_000, 100_000, 300_000, 999_999])
def test_planned_nlist_follows_the_faiss_guideline_below_a_million(count: int) -> None:
    plan = plan_auto(count, 1280)
    nlist = plan.params["nlist"]
    assert 4 * math.sqrt(count) <= nlist <= 16 * math.sqrt(count)
    assert plan.train_size >= 39 * nlist


@pytest.mark.parametrize("count", [2_000_000, 10_000_000])
def test_millions_get_an_hnsw_coarse_quantizer(count: int) -> None:
    plan = plan_auto(count, 1280)
    assert plan.factory == f"IVF{plan.params['nlist']}_HNSW32,Flat"
    estimate = estimate_plan(plan, count, 1280)
    assert estimate.memory_bytes == pytest.approx(count * (1280 * 4 + 8), rel=0.05)
    assert estimate.build_seconds > estimate_plan(plan_auto(count // 2, 1280), count // 2, 1280).build_seconds


@pytest.mark.parametrize(("count", "budget"), [(1_000_000, 2e9), (1_000_000, 1e9), (1_000_000, 3e8), (10_000_000, 4e9)])
def test_a_memory_budget_is_respected(count: int, budget: float) -> None:
    plan = plan_auto(count, 1280, max_memory=budget)
    assert estimate_plan(plan, count, 1280).memory_bytes <= budget
    assert "SQ" in plan.factory or "PQ" in plan.factory


def test_an_impossible_budget_is_a_clear_error() -> None:
    with pytest.raises(IndexSpecError, match="do not fit in 1 MB"):
        plan_auto(1_000_000, 1280, max_memory=1e6)


def test_plan_index_auto_takes_the_budget_and_target_through_options() -> None:
    plan = plan_index("auto", 1_000_000, 1280, options={"max_memory_bytes": 2e9, "target_recall": 0.9})
    assert plan == plan_auto(1_000_000, 1280, max_memory=2e9, target_recall=0.9)


def test_cli_plan_for_a_hypothetical_and_an_existing_collection(ivf_folder: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["plan", "--vectors", "1000000", "--dim", "1280", "--max-memory", "2GB"])
    assert result.exit_code == 0, result.output
    assert "factory:" in result.output and "SQ" in result.output and "budget 2.00 GB" in result.output
    data = json.loads(runner.invoke(main, ["plan", "--index", str(ivf_folder), "--json"]).output)
    assert data["vectors"] == 20_000 and data["dim"] == DIM and data["current_factory"] == "IVF128,Flat"
    assert data["plan"]["factory"] == "Flat"  # 20,000 vectors: exact search, whatever was built before
    bad = runner.invoke(main, ["plan", "--vectors", "10", "--max-memory", "lots"])
    assert bad.exit_code == 2 and "--max-memory wants a size" in bad.output


# --- memory-mapped loading --------------------------------------------------------------------------------


def test_a_collection_maps_its_index_read_only_and_reloads_writable_to_add(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    vectors = mixture(3_000, seed=7)
    make_collection(folder, vectors[:2_500], "ivf", {"nlist": 16})
    with Collection.open(folder) as collection:
        index = collection.index()
        assert index.read_only and index.count == 2_500
        assert collection.search_ids([7], k=1)[0].hits[0].id == 7
    with Collection.open(folder) as collection:
        collection.catalog.add_indexed(
            [NewImage(f"/photos/new{i}.jpg", 1, 1, f"new{i}", 1, 1, v) for i, v in enumerate(vectors[2_500:])]
        )
        index = collection.index()  # new vectors to add: loaded writable, then saved
        assert not index.read_only and index.count == 3_000
    with Collection.open(folder) as collection:
        assert collection.index().read_only and collection.index().count == 3_000


def test_the_fast_open_still_catches_a_file_changed_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    make_collection(folder, mixture(1_000, seed=8), "ivf", {"nlist": 8})
    path = folder / "index.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte different
    path.write_bytes(bytes(data))
    notes: list[str] = []
    with Collection.open(folder, on_notice=notes.append) as collection:
        assert collection.index().count == 1_000
    assert notes and "does not match the checksum" in notes[0]


def test_an_unchanged_file_opens_without_a_full_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lookalike.index

    folder = tmp_path / "idx"
    make_collection(folder, mixture(1_000, seed=9), "hnsw", {"M": 8})
    calls: list[object] = []
    monkeypatch.setattr(lookalike.index, "file_checksum", lambda path: calls.append(path) or "x")
    with Collection.open(folder) as collection:
        assert collection.index().read_only
    assert calls == []
