"""The index store: verified and memory-mapped loading, and keeping the Faiss file in step with the catalog."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection
from lookalike.catalog import NewImage
from lookalike.errors import CorruptIndexError
from lookalike.index import VectorIndex
from lookalike.index_store import load_verified
from lookalike.settings import IndexState
from lookalike.storage import file_checksum
from seeded import COUNT, DIM, IDS, PCA_HNSW, K, make_collection, mixture

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

    loaded = load_verified(path, state, "cosine")

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

    mapped = load_verified(path, state, "cosine", mmap=True)

    for options in ({}, {"nprobe": 1}, {"nprobe": 32}, {"exclude": IDS[::3]}):
        np.testing.assert_array_equal(mapped.search(queries, K, **options)[1], index.search(queries, K, **options)[1])


def test_an_mmapped_index_refuses_new_vectors_instead_of_aborting(tmp_path: Path) -> None:
    # Faiss aborts the process when its read-only mapped lists are written to: try it in a child process.
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        import numpy as np
        from lookalike.errors import LookalikeError
        from lookalike.index import VectorIndex
        from lookalike.index_store import load_verified
        from lookalike.planner import plan_index
        from lookalike.settings import IndexState

        vectors = np.random.default_rng(1338).standard_normal((400, 16)).astype(np.float32)
        index = VectorIndex.create(plan_index("ivf", 400, 16), 16)
        index.train(vectors)
        index.add(np.arange(400), vectors)
        path = Path({str(tmp_path / "index.faiss")!r})
        mapped = load_verified(path, IndexState(index.save(path), 400, 16, 399), "cosine", mmap=True)
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
        load_verified(path, state, "cosine")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_a_truncated_file_is_refused_even_with_its_own_checksum(
    built: Callable[[str], VectorIndex], tmp_path: Path, kind: str
) -> None:
    # As if the catalog had recorded a half-written file: Faiss itself must fail cleanly.
    path = tmp_path / "index.faiss"
    state = saved(built(kind), path)
    truncate(path)

    with pytest.raises(CorruptIndexError, match="cannot be read by Faiss") as caught:
        load_verified(path, IndexState(file_checksum(path), state.count, state.dim, state.high_water), "cosine")
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
        load_verified(path, recorded, "cosine")


def test_a_file_built_for_another_metric_is_refused(built: Callable[[str], VectorIndex], tmp_path: Path) -> None:
    path = tmp_path / "index.faiss"
    state = saved(built("flat"), path)

    with pytest.raises(CorruptIndexError, match="built for the cosine metric, not l2"):
        load_verified(path, state, "l2")


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
    import lookalike.index_store

    folder = tmp_path / "idx"
    make_collection(folder, mixture(1_000, seed=9), "hnsw", {"M": 8})
    calls: list[object] = []
    monkeypatch.setattr(lookalike.index_store, "file_checksum", lambda path: calls.append(path) or "x")
    with Collection.open(folder) as collection:
        assert collection.index().read_only
    assert calls == []
