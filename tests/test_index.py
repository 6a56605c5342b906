"""The Faiss layer on synthetic embeddings: plans, recall against exact search, ids, tombstones, files.

The data stand in for CNN embeddings of a photo collection: unit vectors drawn
from a Gaussian mixture on a low-dimensional subspace (clusters of similar
photos), seeded so every run sees the same collection.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookalike.errors import CorruptIndexError, IndexSpecError
from lookalike.index import (
    FLAT_LIMIT,
    MIN_POINTS_PER_CENTROID,
    IndexState,
    VectorIndex,
    plan_index,
)
from lookalike.storage import file_checksum

DIM = 64
COUNT = 5_000
K = 10
IDS = 7 + 3 * np.arange(COUNT, dtype=np.int64)  # catalog ids: not 0..n-1, as after deletions
NOT_AN_ID = 8  # never added: 8 is not of the form 7 + 3i

# Factory strings the tests use besides the kind names.
PCA_IVF = "PCA32,IVF32,Flat"
PCA_HNSW = "PCA32,HNSW16"  # a PreTransform under an IDMap: tombstones are filtered by over-fetching
REFINE = "IVF64,Flat,RFlat"  # an IndexRefine over IVF: ids through an IDMap, nprobe through the refine


def clustered_unit_vectors(count: int, seed: int, dim: int = DIM) -> np.ndarray:
    """`count` unit vectors from one fixed mixture of 32 clusters on a 24-dimensional subspace."""
    shape = np.random.default_rng(1338)
    basis = np.linalg.qr(shape.standard_normal((dim, 24)))[0]
    centres = shape.standard_normal((32, 24))
    rng = np.random.default_rng(seed)
    latent = centres[rng.integers(len(centres), size=count)] + 0.5 * rng.standard_normal((count, 24))
    vectors = latent @ basis.T + 0.05 * rng.standard_normal((count, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def build(kind: str, vectors: np.ndarray, ids: np.ndarray, metric: str = "cosine", **options: int) -> VectorIndex:
    """Plan, create, train and fill an index the way the collection does."""
    plan = plan_index(kind, len(vectors), vectors.shape[1], metric, options)
    index = VectorIndex.create(plan, vectors.shape[1])
    if not index.is_trained:
        index.train(vectors[: plan.train_size])
    index.add(ids, vectors)
    return index


def best_first(scores: np.ndarray) -> bool:
    """Every row sorted from the highest score down (empty slots, -inf, last)."""
    return bool((scores[:, :-1] >= scores[:, 1:]).all())


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of `truth` present in the same row of `found`."""
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_unit_vectors(COUNT, seed=1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    """New photos of the same kinds as the collection's (not in it)."""
    return clustered_unit_vectors(200, seed=2)


@pytest.fixture(scope="module")
def built(vectors: np.ndarray) -> Callable[[str], VectorIndex]:
    """The collection indexed as `kind`, built once per module (tests only search it)."""
    cache: dict[str, VectorIndex] = {}

    def get(kind: str) -> VectorIndex:
        if kind not in cache:
            cache[kind] = build(kind, vectors, IDS)
        return cache[kind]

    return get


@pytest.fixture(scope="module")
def exact(built: Callable[[str], VectorIndex], queries: np.ndarray) -> np.ndarray:
    """The true top-K ids of every query, from the flat index."""
    return built("flat").search(queries, K)[1]


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


# --- files -----------------------------------------------------------------------

FILE_KINDS = ["flat", "ivf", "ivfpq", "hnsw", PCA_HNSW]


def saved(index: VectorIndex, path: Path) -> IndexState:
    """Save `index` and return what the catalog would record of it."""
    return IndexState(index.save(path), index.count, index.dim, int(IDS.max()))


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_a_saved_index_loads_with_identical_results(
    built: Callable[[str], VectorIndex], queries: np.ndarray, tmp_path: Path, kind: str
) -> None:
    index = built(kind)
    path = tmp_path / "index.faiss"
    state = saved(index, path)

    loaded = VectorIndex.load(path, state, "cosine")

    assert state.checksum == file_checksum(path)
    assert (loaded.count, loaded.dim, loaded.default_params()) == (COUNT, DIM, index.default_params())
    tombstones = IDS[::7]
    for before, after in [
        (index.search(queries, K), loaded.search(queries, K)),
        (index.search(queries, K, exclude=tombstones), loaded.search(queries, K, exclude=tombstones)),
    ]:
        np.testing.assert_array_equal(after[1], before[1])
        np.testing.assert_array_equal(after[0], before[0])


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_an_mmapped_ivf_index_gives_the_same_results(
    built: Callable[[str], VectorIndex], queries: np.ndarray, tmp_path: Path, kind: str
) -> None:
    index = built(kind)
    path = tmp_path / "index.faiss"
    state = saved(index, path)

    mapped = VectorIndex.load(path, state, "cosine", mmap=True)

    for options in ({}, {"nprobe": 1}, {"nprobe": 32}, {"exclude": IDS[::3]}):
        np.testing.assert_array_equal(mapped.search(queries, K, **options)[1], index.search(queries, K, **options)[1])


def test_an_mmapped_index_refuses_new_vectors_instead_of_aborting(tmp_path: Path) -> None:
    # Faiss aborts the process when its read-only mapped lists are written to: try it in a child process.
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import numpy as np
        from lookalike.errors import LookalikeError
        from lookalike.index import IndexState, VectorIndex, plan_index

        vectors = np.random.default_rng(1338).standard_normal((400, 16)).astype(np.float32)
        index = VectorIndex.create(plan_index("ivf", 400, 16), 16)
        index.train(vectors)
        index.add(np.arange(400), vectors)
        path = Path({str(tmp_path / "index.faiss")!r})
        mapped = VectorIndex.load(path, IndexState(index.save(path), 400, 16, 399), "cosine", mmap=True)
        try:
            mapped.add(np.array([400]), vectors[:1])
        except LookalikeError as error:
            print("refused:", error)
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert child.returncode == 0, child.stderr[-2000:]
    assert "refused: " in child.stdout and "mmap" in child.stdout


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (flip_a_byte, "does not match the checksum"),
        (truncate, "does not match the checksum"),
        (Path.unlink, "is missing"),
    ],
)
@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_a_damaged_file_is_refused(
    built: Callable[[str], VectorIndex], tmp_path: Path, kind: str, damage: Callable[[Path], None], message: str
) -> None:
    path = tmp_path / "index.faiss"
    state = saved(built(kind), path)
    damage(path)

    with pytest.raises(CorruptIndexError, match=message):
        VectorIndex.load(path, state, "cosine")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_a_truncated_file_is_refused_even_with_its_own_checksum(
    built: Callable[[str], VectorIndex], tmp_path: Path, kind: str
) -> None:
    # As if the catalog had recorded a half-written file: Faiss itself must fail cleanly.
    path = tmp_path / "index.faiss"
    state = saved(built(kind), path)
    truncate(path)

    with pytest.raises(CorruptIndexError, match="cannot be read by Faiss") as caught:
        VectorIndex.load(path, IndexState(file_checksum(path), state.count, state.dim, state.high_water), "cosine")
    assert "Error in" not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count": COUNT - 1}, f"holds {COUNT} vectors of dim {DIM}; the catalog expected {COUNT - 1}"),
        ({"count": COUNT + 1}, f"the catalog expected {COUNT + 1} of dim {DIM}"),
        ({"dim": 128}, f"the catalog expected {COUNT} of dim 128"),
    ],
)
def test_a_file_that_disagrees_with_the_catalog_is_refused(
    built: Callable[[str], VectorIndex], tmp_path: Path, change: dict[str, int], message: str
) -> None:
    path = tmp_path / "index.faiss"
    state = saved(built("ivf"), path)
    recorded = IndexState(**{**state.__dict__, **change})

    with pytest.raises(CorruptIndexError, match=message):
        VectorIndex.load(path, recorded, "cosine")


def test_a_file_built_for_another_metric_is_refused(built: Callable[[str], VectorIndex], tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    state = saved(built("flat"), path)

    with pytest.raises(CorruptIndexError, match="built for the cosine metric, not l2"):
        VectorIndex.load(path, state, "l2")


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
