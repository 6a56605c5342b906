"""The planner: which index to build for a collection, chosen before building anything."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lookalike.cli import main
from lookalike.errors import IndexSpecError
from lookalike.index import VectorIndex
from lookalike.index_store import load_verified
from lookalike.planner import FLAT_LIMIT, MIN_POINTS_PER_CENTROID, estimate_plan, plan_auto, plan_index
from lookalike.rerank import RERANK_PARAM
from lookalike.settings import IndexState
from seeded import COUNT, DIM, PCA_IVF, build, clustered_unit_vectors, mixture

# --- plan_index ----------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 5_000, FLAT_LIMIT])
def test_auto_plans_exact_search_for_small_collections(count: int) -> None:
    plan = plan_index("auto", count, DIM)

    assert (plan.kind, plan.factory, plan.train_size) == ("flat", "Flat", 0)


@pytest.mark.parametrize("count", [FLAT_LIMIT + 1, 100_000, 1_000_000])
def test_auto_plans_ivf_sized_by_the_collection(count: int) -> None:
    plan = plan_index("auto", count, DIM)
    nlist = plan.params["nlist"]

    assert plan.kind == "ivf"
    assert plan.factory in (f"IVF{nlist},Flat", f"IVF{nlist}_HNSW32,Flat")  # HNSW coarse quantizer from 2048 lists
    assert nlist * MIN_POINTS_PER_CENTROID <= count
    assert plan.train_size >= nlist * MIN_POINTS_PER_CENTROID  # every centroid gets enough training points
    if count >= 100_000:  # big enough for the sqrt rule not to be clamped
        assert 4 * math.sqrt(count) <= nlist <= 16 * math.sqrt(count)


@pytest.mark.parametrize(("count", "options"), [(500, {}), (2_000, {}), (2_000, {"nlist": 1024})])
def test_nlist_is_clamped_so_every_centroid_can_be_trained(
    count: int, options: dict[str, int], capfd: pytest.CaptureFixture[str]
) -> None:
    plan = plan_index("ivf", count, DIM, options=options)
    assert 1 <= plan.params["nlist"] <= count // MIN_POINTS_PER_CENTROID
    assert "clamped" in plan.reason

    index = build("ivf", clustered_unit_vectors(count, seed=3), np.arange(count), **options)
    # Faiss complains on stderr when a centroid has fewer than 39 training points.
    assert "please provide at least" not in capfd.readouterr().err
    assert index.count == count


@pytest.mark.parametrize("count", [20, 100, 200])
def test_ivfpq_code_size_is_clamped_for_tiny_collections(count: int) -> None:
    plan = plan_index("ivfpq", count, DIM)
    nbits = plan.params["nbits"]

    assert 1 <= nbits < 8
    assert 2**nbits <= count  # each PQ codebook has 2**nbits centroids to train on `count` points
    assert plan.factory.endswith(f"x{nbits}")
    index = build("ivfpq", clustered_unit_vectors(count, seed=4), np.arange(count))
    assert index.count == count


def test_ivfpq_keeps_8_bit_codes_for_a_large_collection() -> None:
    plan = plan_index("ivfpq", 100_000, 128)

    assert plan.params["nbits"] == 8
    assert plan.factory == f"IVF{plan.params['nlist']},PQ{plan.params['m']}x8"


@pytest.mark.parametrize("dim", [64, 96, 100, 128, 512])
def test_default_pq_m_divides_the_dimension(dim: int) -> None:
    m = plan_index("ivfpq", 50_000, dim).params["m"]

    assert dim % m == 0


def test_pq_m_must_divide_the_dimension() -> None:
    with pytest.raises(IndexSpecError, match="m=7 must divide the vector dimension 64"):
        plan_index("ivfpq", 50_000, 64, options={"m": 7})


@pytest.mark.parametrize(
    ("factory", "reason"),
    [("Lookalike", "could not parse index string"), ("IVF64,Flatt", "could not parse"), ("PQ7", "multiple")],
)
def test_a_bad_factory_string_is_a_readable_error(factory: str, reason: str) -> None:
    with pytest.raises(IndexSpecError) as caught:
        plan_index(factory, 10_000, DIM)

    message = str(caught.value)
    assert repr(factory) in message
    assert reason in message
    assert "auto, flat, ivf, ivfpq, hnsw" in message  # what the user could have meant
    for noise in ("Error in", ".cpp", "Traceback", "\n"):
        assert noise not in message


def test_a_factory_string_needing_more_vectors_than_the_collection_has() -> None:
    with pytest.raises(IndexSpecError, match="needs at least 4096 vectors"):
        plan_index("IVF4096,Flat", 1_000, DIM)


def test_a_factory_string_plan_keeps_the_string_and_reports_nlist() -> None:
    plan = plan_index(PCA_IVF, COUNT, DIM)

    assert (plan.kind, plan.factory, plan.params) == ("factory", PCA_IVF, {"nlist": 32})
    assert plan.train_size == COUNT


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", PCA_IVF])
def test_an_unknown_metric_is_refused(kind: str) -> None:
    with pytest.raises(IndexSpecError, match="unknown metric 'dot'"):
        plan_index(kind, 10_000, DIM, metric="dot")


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
        loaded = load_verified(path, state, "cosine", mmap=mmap)
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


def test_a_million_embeddings_in_1gb_get_pca_codes_reranked_from_the_catalog() -> None:
    plan = plan_auto(1_000_000, 1280, max_memory=1e9)
    estimate = estimate_plan(plan, 1_000_000, 1280)

    assert plan.factory == f"PCAR256,IVF{plan.params['nlist']}_HNSW32,SQ8"
    assert plan.params[RERANK_PARAM] > 1 and plan.metric == "l2"  # PCA centres: only L2 keeps the cosine order
    assert estimate.memory_bytes <= 1e9 and estimate.recall_ceiling >= 0.95
    assert "re-ranking" in plan.reason


@pytest.mark.parametrize(("budget", "target", "codec"), [(2e9, 0.95, "SQ8"), (1e9, 0.7, "SQ8")])
def test_a_plain_codec_meeting_the_target_is_preferred_to_reranking(budget: float, target: float, codec: str) -> None:
    plan = plan_auto(1_000_000, 1280, max_memory=budget, target_recall=target)

    assert plan.factory.endswith(codec) and RERANK_PARAM not in plan.params
    assert estimate_plan(plan, 1_000_000, 1280).recall_ceiling >= target


def test_few_dimensions_are_never_reduced_by_pca() -> None:
    for budget in (300_000, 150_000):
        plan = plan_auto(5_000, DIM, max_memory=budget, flat_limit=500, large_limit=3_000)
        assert "PCA" not in plan.factory and RERANK_PARAM not in plan.params


def test_any_kind_takes_a_rerank_option() -> None:
    plain = plan_index("ivf", COUNT, DIM)
    plan = plan_index("ivf", COUNT, DIM, options={RERANK_PARAM: 3})

    assert (plan.factory, plan.params) == (plain.factory, {**plain.params, RERANK_PARAM: 3})
    assert plan_index("ivf", COUNT, DIM, options={RERANK_PARAM: 1}) == plain
