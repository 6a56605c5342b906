"""`lookalike check`: every file of a collection verified, and what can be repaired, repaired."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection, CorruptCatalogError
from lookalike.check import check_collection
from lookalike.demo import SAMPLE_PHOTOS, sample_photo

PLUMBING = "colour-layout"  # these tests are about files, not look-alike quality


@pytest.fixture
def collection_folder(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in SAMPLE_PHOTOS[:6]:
        sample_photo(name).save(photos / f"{name}.jpg", quality=90)
    with Collection.create(tmp_path / "idx", embedder=PLUMBING) as collection:
        collection.add_folder(photos)
    return tmp_path / "idx"


def flip_stored_vector(folder: Path, image_id: int) -> None:
    """What a failing disk does to one stored embedding: a few bytes flipped."""
    with sqlite3.connect(folder / "catalog.sqlite") as connection:
        [blob] = connection.execute("SELECT vector FROM embeddings WHERE image_id = ?", (image_id,)).fetchone()
        damaged = bytearray(blob)
        damaged[10:14] = b"\xff\xff\x7f\x7f"
        connection.execute("UPDATE embeddings SET vector = ? WHERE image_id = ?", (bytes(damaged), image_id))


def lookalike(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookalike", *args], capture_output=True, text=True, timeout=120)


def test_a_healthy_collection_checks_healthy(collection_folder: Path) -> None:
    report = check_collection(collection_folder)
    assert report.healthy and [f.part for f in report.findings] == [
        "catalog",
        "embeddings",
        "index",
        "manifest",
        "temp files",
        "shard files",
    ]
    assert lookalike("check", "--index", str(collection_folder)).returncode == 0


def test_a_damaged_vector_is_found_never_ranked_and_re_embedded_after_repair(collection_folder: Path) -> None:
    flip_stored_vector(collection_folder, 3)
    with Collection.open(collection_folder) as collection:
        with pytest.raises(CorruptCatalogError, match="stored embedding of image 3 .* is damaged"):
            collection.search_ids([3], k=2)
        collection.reindex("flat")  # a rebuild leaves the damaged vector out
        assert collection.index().count == 5
        assert 3 not in {hit.id for hit in collection.search_ids([1], k=6)[0].hits}
    found = json.loads(lookalike("check", "--index", str(collection_folder), "--json").stdout)
    assert not found["healthy"]
    assert [f["part"] for f in found["findings"] if not f["healthy"]] == ["embeddings"]
    repaired = lookalike("check", "--index", str(collection_folder), "--repair")
    assert repaired.returncode == 0 and "repaired" in repaired.stdout
    assert check_collection(collection_folder).healthy
    photos = collection_folder.parent / "photos"
    with Collection.open(collection_folder) as collection:
        report = collection.add_folder(photos)
        assert report.embedded == 1  # the damaged image, embedded again
        assert collection.index().count == 6 and collection.search_ids([1], k=6)[0].hits


def test_a_damaged_index_file_missing_manifest_and_temp_files_are_repaired(collection_folder: Path) -> None:
    index_file = collection_folder / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:100])
    (collection_folder / "manifest.json").unlink()
    (collection_folder / ".index.faiss.deadbeef.tmp").write_bytes(b"\0" * 1000)
    before = lookalike("check", "--index", str(collection_folder))
    assert before.returncode == 1
    assert {line.split()[0] for line in before.stdout.splitlines() if "PROBLEM" in line} == {
        "index",
        "manifest",
        "temp",
    }
    assert lookalike("check", "--index", str(collection_folder), "--repair").returncode == 0
    assert check_collection(collection_folder).healthy
    assert not (collection_folder / ".index.faiss.deadbeef.tmp").exists()


def test_a_damaged_catalog_is_reported_not_repaired(collection_folder: Path) -> None:
    with open(collection_folder / "catalog.sqlite", "r+b") as handle:
        handle.write(b"not sqlite at all")
    result = lookalike("check", "--index", str(collection_folder), "--repair")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "catalog" in result.stdout and "damaged" in result.stdout


def test_a_flip_that_keeps_the_norm_is_caught_by_the_checksum(collection_folder: Path) -> None:
    with sqlite3.connect(collection_folder / "catalog.sqlite") as connection:
        [blob] = connection.execute("SELECT vector FROM embeddings WHERE image_id = 2").fetchone()
        damaged = bytearray(blob)
        damaged[0] ^= 0x01  # the lowest bit of the first float's mantissa: the norm moves by ~1e-8
        connection.execute("UPDATE embeddings SET vector = ? WHERE image_id = 2", (bytes(damaged),))
    vector = np.frombuffer(bytes(damaged), dtype=np.float32)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3  # the norm rule alone would not see it
    with Collection.open(collection_folder) as collection:
        with pytest.raises(CorruptCatalogError, match="stored embedding of image 2"):
            collection.search_ids([2], k=2)
        collection.reindex("flat")
        assert collection.index().count == 5
    report = check_collection(collection_folder)
    assert not report.healthy and "ids 2)" in report.findings[1].detail


def test_a_catalog_of_schema_2_gets_checksums_for_what_it_stores(collection_folder: Path) -> None:
    with sqlite3.connect(collection_folder / "catalog.sqlite") as connection:  # as an earlier lookalike left it
        for table in ("embedding_checksums", "embedding_shards", "embedding_locations"):
            connection.execute(f"DROP TABLE {table}")
        connection.execute("PRAGMA user_version = 2")
    with Collection.open(collection_folder) as collection:
        rows = collection.catalog.connection.execute("SELECT count(*) FROM embedding_checksums").fetchone()[0]
        assert rows == collection.catalog.count_embeddings() == 6
    assert check_collection(collection_folder).healthy


def test_the_norm_rule_accepts_what_embedders_store() -> None:
    from lookalike.vector_integrity import sound_vectors

    unit = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    odd = np.vstack([unit, np.zeros((1, 8), np.float32), 3 * unit[:1], np.full((1, 8), np.nan, np.float32)])
    assert sound_vectors(odd, 32).tolist() == [True, True, True, True, True, False, False]
