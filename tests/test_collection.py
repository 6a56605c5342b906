"""Searching a collection of real photos: transformed copies find their originals, for every index kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from disks import remount
from lookalike import Collection, EmbedderMismatchError, LookalikeError, NotIndexedError
from lookalike.demo import SAMPLE_PHOTOS, TRANSFORMS, sample_photo, save_exif_rotated

KINDS = ["flat", "ivf", "ivfpq", "hnsw", "IVF2,SQ8", "HNSW16,SQ8"]


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, str]:
    """Transformed copies of every original (crop, resize, JPEG, flip, colour, blur, EXIF-rotated) -> photo name."""
    folder = tmp_path_factory.mktemp("copies")
    expected = {}
    for name in SAMPLE_PHOTOS:
        original = sample_photo(name)
        for transform, apply in TRANSFORMS.items():
            path = folder / f"{name}-{transform}.jpg"
            apply(original).save(path, quality=90)
            expected[path] = name
        rotated = folder / f"{name}-exif-rotated.jpg"
        save_exif_rotated(original, rotated)
        expected[rotated] = name
    return expected


def _stem(path: str) -> str:
    return Path(path).stem


@pytest.mark.parametrize("kind", KINDS)
def test_every_copy_finds_its_original_first(index_copy: Path, copies: dict[Path, str], kind: str) -> None:
    with Collection.open(index_copy) as collection:
        collection.reindex(kind)
        results = collection.search(list(copies), k=3, mode="fast")
    misses = [
        (r.query, [_stem(h.path) for h in r.hits]) for r in results if _stem(r.hits[0].path) != copies[Path(r.query)]
    ]
    assert misses == []


def test_scores_are_cosine_similarities_best_first(built_index: Path, copies: dict[Path, str]) -> None:
    with Collection.open(built_index) as collection:
        result = collection.search([next(iter(copies))], k=5, mode="fast")[0]
    scores = [hit.score for hit in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 + 1e-5 for s in scores)
    assert scores[0] > 0.6 > scores[-1]


def test_searching_with_an_indexed_file_reuses_its_embedding(built_index: Path, originals: Path) -> None:
    photo = next(originals.rglob("chelsea.*"))
    with Collection.open(built_index) as collection:
        by_path = collection.search([photo], k=3, mode="fast")[0]
        by_id = collection.search_ids([by_path.query_id], k=3)[0]
        assert collection._embedder is None  # the model was never loaded
    assert by_path.query_id is not None
    assert by_path.hits[0].id == by_path.query_id
    assert by_path.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.id for h in by_id.hits] == [h.id for h in by_path.hits]


def test_many_queries_run_as_one_batch_in_order(built_index: Path, copies: dict[Path, str]) -> None:
    queries = list(copies)[:9]
    with Collection.open(built_index) as collection:
        batch = collection.search(queries, k=2, mode="fast")
        single = [collection.search([q], k=2, mode="fast")[0] for q in queries]
    assert [r.query for r in batch] == [str(q) for q in queries]
    assert [[h.id for h in r.hits] for r in batch] == [[h.id for h in r.hits] for r in single]


def test_search_by_unknown_id_is_a_clear_error(built_index: Path) -> None:
    with Collection.open(built_index) as collection, pytest.raises(NotIndexedError, match="no indexed image has id"):
        collection.search_ids([999_999])


@pytest.mark.parametrize("k", [0, -1, 10_001])
def test_k_out_of_range_is_refused(built_index: Path, k: int) -> None:
    with (
        Collection.open(built_index) as collection,
        pytest.raises(LookalikeError, match="number of results must be between"),
    ):
        collection.search_ids([1], k=k)


def test_k_beyond_the_collection_returns_everything_once(built_index: Path) -> None:
    with Collection.open(built_index) as collection:
        hits = collection.search_ids([1], k=500)[0].hits
        assert len(hits) == collection.catalog.count() == len({h.id for h in hits})


def test_a_collection_keeps_its_embedder(index_copy: Path) -> None:
    with pytest.raises(EmbedderMismatchError, match="was built with efficientnet-lite0"):
        Collection.create(index_copy, model="resnet50")


def test_manifest_describes_the_index(built_index: Path) -> None:
    manifest = json.loads((built_index / "manifest.json").read_text())
    assert manifest["embedder"]["name"] == "efficientnet-lite0"
    assert manifest["embedder"]["id"].startswith("efficientnet-lite0@")
    assert manifest["embedder"]["dim"] == 1280
    assert "(x - [127.0, 127.0, 127.0]) / [128.0, 128.0, 128.0]" in manifest["embedder"]["preprocessing"]
    assert manifest["index"]["factory"] == "Flat"
    assert manifest["index"]["count"] == len(SAMPLE_PHOTOS)
    assert {"faiss_version", "lookalike_version", "schema_version", "metric"} <= manifest.keys()


def test_reindex_switches_kind_without_running_the_model(index_copy: Path) -> None:
    with Collection.open(index_copy) as collection:
        before = [h.id for h in collection.search_ids([3], k=5)[0].hits]
        plan = collection.reindex("hnsw")
        after = [h.id for h in collection.search_ids([3], k=5)[0].hits]
        assert collection._embedder is None
        assert collection.info().index_factory == plan.factory == "HNSW32,Flat"
    assert after == before


def test_l2_metric_ranks_like_cosine(index_copy: Path) -> None:
    with Collection.open(index_copy) as collection:
        cosine = collection.search_ids([2], k=6)[0].hits
        collection.reindex("flat", metric="l2")
        l2 = collection.search_ids([2], k=6)[0].hits
    assert [h.id for h in l2] == [h.id for h in cosine]
    assert [h.score for h in l2] == pytest.approx([h.score for h in cosine], abs=1e-4)


def test_a_factory_string_too_big_for_the_collection_is_a_clear_error(index_copy: Path) -> None:
    with Collection.open(index_copy) as collection:
        with pytest.raises(
            LookalikeError, match="PCA to 64 dimensions needs at least 64 training vectors; the collection has 14"
        ):
            collection.reindex("PCA64,HNSW16")
        assert collection.search_ids([1], k=1)[0].hits[0].id == 1  # the old index still serves


def test_a_read_only_collection_never_writes_and_refreshes_when_another_process_saves(
    index_copy: Path, tmp_path: Path
) -> None:
    photos = tmp_path / "more"
    photos.mkdir()
    TRANSFORMS["crop"](sample_photo("chelsea")).save(photos / "chelsea-cropped.jpg", quality=90)
    files = ("catalog.sqlite", "index.faiss", "manifest.json")  # (SQLite's -wal/-shm come with any reader)
    before = {name: (index_copy / name).stat().st_mtime_ns for name in files}
    with Collection.open(index_copy, read_only=True) as reader:
        assert reader.index().count == len(SAMPLE_PHOTOS)
        assert not reader.refresh()  # nothing changed
        with pytest.raises(LookalikeError, match="read-only"):
            reader.add_folder(photos)
        assert {name: (index_copy / name).stat().st_mtime_ns for name in files} == before
        with Collection.open(index_copy) as writer:
            writer.add_folder(photos)
        assert reader.refresh()
        assert reader.index().count == len(SAMPLE_PHOTOS) + 1


def test_scratch_files_of_a_killed_update_are_counted_then_removed_by_the_next(index_copy: Path) -> None:
    dead = index_copy / ".index.faiss.a1b2c3.tmp"  # what a kill -9 during a save leaves
    dead.write_bytes(b"\0" * 4096)
    with Collection.open(index_copy) as collection:
        assert collection.info().temp_files == 1
        collection.reindex("flat")
        assert collection.info().temp_files == 0
    assert not dead.exists()


@pytest.mark.parametrize(
    ("kind", "metric", "count"),
    [
        ("IVF0,Flat", "cosine", 300),
        ("PQ16", "cosine", 300),
        ("PQ4x4", "cosine", 300),
        ("LSH", "l2", 300),
        ("NSG32,Flat", "cosine", 40),
        ("OPQ16,IVF4,PQ16x4", "cosine", 200),
    ],
)
def test_factory_strings_that_failed_after_building_are_refused_or_searchable(
    tmp_path: Path, kind: str, metric: str, count: int
) -> None:
    from lookalike import IndexSpecError
    from seeded import make_collection, mixture

    folder = tmp_path / "idx"
    make_collection(folder, mixture(count, dim=256, seed=3), "flat")
    with Collection.open(folder) as collection:
        collection.catalog.remove_images([2])  # a tombstone the search must leave out
        try:
            collection.reindex(kind, metric=metric)
        except IndexSpecError as error:  # refused before building: one line
            assert "\n" not in str(error) and kind.split(",")[0] in str(error)
            assert collection.info().index_factory == "Flat"  # the collection keeps its index
            return
        hits = collection.search_ids([1], k=5)[0].hits
    assert len(hits) == 5 and 2 not in {hit.id for hit in hits}


def test_a_collection_on_read_only_media_searches_and_its_writers_say_why_they_cannot(
    tmp_path: Path, media: Path
) -> None:
    import subprocess
    import sys

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in SAMPLE_PHOTOS[:4]:
        sample_photo(name).save(photos / f"{name}.jpg", quality=90)
    with Collection.create(media / "idx", embedder="colour-layout") as collection:
        collection.add_folder(photos)
    remount(media, "ro")

    def lookalike(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lookalike", *args], capture_output=True, text=True)

    info = lookalike("info", "--index", str(media / "idx"))
    assert info.returncode == 0 and "4 indexed" in info.stdout, info.stderr
    search = lookalike("search", str(photos / "coffee.jpg"), "--index", str(media / "idx"), "--json")
    assert search.returncode == 0, search.stderr
    assert Path(json.loads(search.stdout)[0]["results"][0]["path"]).name == "coffee.jpg"
    update = lookalike("index", str(photos), "--index", str(media / "idx"))
    assert update.returncode == 1 and "Traceback" not in update.stderr
    assert update.stderr.strip().splitlines() == [f"error: cannot update {media / 'idx'}: Read-only file system"]
