"""The catalog: its schema ladder, its settings, and the facts it keeps of each file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from disks import remount
from lookalike.catalog import MIGRATIONS, SCHEMA_VERSION, Catalog, NewImage
from lookalike.errors import CollectionNotFoundError, SchemaVersionError
from lookalike.planner import plan_index
from lookalike.settings import IndexState, Settings, read_settings, store_settings


def test_a_new_catalog_climbs_every_step_of_the_ladder(tmp_path: Path) -> None:
    catalog = Catalog.open(tmp_path / "idx", create=True)
    version = catalog.connection.execute("PRAGMA user_version").fetchone()[0]
    tables = {row[0] for row in catalog.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    catalog.close()
    assert version == SCHEMA_VERSION == len(MIGRATIONS)
    assert {"images", "embeddings", "tombstones", "meta"} <= tables


def test_an_older_catalog_is_brought_up_to_date_on_open(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    folder.mkdir()
    with sqlite3.connect(folder / "catalog.sqlite") as connection:
        MIGRATIONS[0](connection)  # a catalog left at version 1 by an earlier lookalike
        connection.execute("PRAGMA user_version = 1")
    catalog = Catalog.open(folder)
    assert catalog.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    catalog.close()


def test_a_catalog_of_the_previous_version_keeps_its_rows_and_gains_the_duplicate_tables(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    folder.mkdir()
    vector = np.ones(4, dtype=np.float32) / 2
    with sqlite3.connect(folder / "catalog.sqlite") as connection:
        MIGRATIONS[0](connection)  # version 1: no signatures, no decisions
        connection.execute("PRAGMA user_version = 1")
        connection.execute(
            "INSERT INTO images (path, size, mtime_ns, content_hash, width, height, status)"
            " VALUES (?, 10, 1, 'h1', 2, 2, 'indexed')",
            (b"/photos/a.jpg",),
        )
        connection.execute("INSERT INTO embeddings (image_id, vector) VALUES (1, ?)", (vector.tobytes(),))
    catalog = Catalog.open(folder)
    try:
        assert catalog.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert catalog.image_by_path("/photos/a.jpg") is not None
        assert catalog.connection.execute("SELECT count(*) FROM embedding_checksums").fetchone()[0] == 1
        assert catalog.signatures([1]) == {}  # indexed before signatures: grouping falls back on embeddings
        decision = catalog.add_decision("not-duplicates", ["h1", "h2"])
        assert catalog.decisions() == [("not-duplicates", frozenset({"h1", "h2"}))] and decision == 1
    finally:
        catalog.close()


def test_a_previous_version_catalog_on_read_only_media_opens_without_the_new_tables_filled(media: Path) -> None:
    (media / "idx").mkdir()
    connection = sqlite3.connect(media / "idx" / "catalog.sqlite")
    with connection:
        MIGRATIONS[0](connection)
        connection.execute("PRAGMA user_version = 1")
    connection.close()  # the mount must have no open file to become read-only
    remount(media, "ro")
    catalog = Catalog.open(media / "idx")
    try:
        assert catalog.signatures([1]) == {} and catalog.decisions() == []
        assert catalog.connection.execute("PRAGMA user_version").fetchone()[0] == 1  # nothing was written
    finally:
        catalog.close()


def test_a_signature_is_stored_with_its_row_and_goes_with_it(tmp_path: Path) -> None:
    from lookalike.catalog_duplicates import StoredSignature

    catalog = Catalog.open(tmp_path / "idx", create=True)
    signature = StoredSignature(bytes(range(256)) * 4, 80)
    [image_id] = catalog.add_indexed([NewImage("/p/a.jpg", 1, 1, "h", 1, 1, np.ones(4, np.float32), signature)])
    assert catalog.signatures([image_id]) == {image_id: signature}
    catalog.remove_images([image_id])
    assert catalog.count_signatures() == 0
    catalog.close()


def test_a_catalog_from_a_newer_lookalike_is_refused(tmp_path: Path) -> None:
    Catalog.open(tmp_path / "idx", create=True).close()
    with sqlite3.connect(tmp_path / "idx" / "catalog.sqlite") as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaVersionError, match="newer lookalike"):
        Catalog.open(tmp_path / "idx")


def test_opening_a_folder_without_a_catalog_says_so(tmp_path: Path) -> None:
    with pytest.raises(CollectionNotFoundError, match="no lookalike collection in"):
        Catalog.open(tmp_path / "nothing")


def test_settings_round_trip_with_their_types(tmp_path: Path) -> None:
    catalog = Catalog.open(tmp_path / "idx", create=True)
    assert read_settings(catalog) == Settings()
    plan = plan_index("hnsw", 100, 64)
    state = IndexState("abc", 100, 64, 100, 1, 2, 3, 4)
    store_settings(
        catalog, embedder_name="e", dim=64, index_plan=plan, index_state=state, search_defaults={"efSearch": 32}
    )
    settings = read_settings(catalog)
    catalog.close()
    assert (settings.embedder_name, settings.dim, settings.metric) == ("e", 64, "cosine")
    assert settings.index_plan == plan and settings.index_state == state
    assert settings.search_defaults == {"efSearch": 32} and settings.created


def test_an_unknown_setting_is_refused(tmp_path: Path) -> None:
    catalog = Catalog.open(tmp_path / "idx", create=True)
    with pytest.raises(TypeError, match="not settings: colour"):
        store_settings(catalog, colour="blue")
    catalog.close()


def test_a_record_knows_whether_its_file_changed(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x" * 10)
    info = photo.stat()
    catalog = Catalog.open(tmp_path / "idx", create=True)
    vector = np.ones(4, dtype=np.float32)
    [image_id] = catalog.add_indexed([NewImage(str(photo), info.st_size, info.st_mtime_ns, "h", 1, 1, vector)])
    assert catalog.images_by_id([image_id])[image_id].file_unchanged()
    photo.write_bytes(b"y" * 11)
    assert not catalog.images_by_id([image_id])[image_id].file_unchanged()
    assert catalog.embedding_ids().tolist() == [image_id]
    catalog.close()


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_a_batch_takes_new_ids_replaces_the_rows_at_its_paths_and_keeps_each_vector_with_its_row(
    tmp_path: Path,
) -> None:
    from lookalike.catalog_duplicates import StoredSignature

    catalog = Catalog.open(tmp_path / "idx", create=True)
    try:
        first = catalog.add_indexed(
            [NewImage(f"/p/{name}.jpg", 1, 1, name, 1, 1, _unit(n)) for n, name in enumerate("ab")]
        )
        catalog.remove_images([first[1]])  # the largest id so far: it must not be handed out again
        signature = StoredSignature(bytes(range(256)) * 4, 75, 2)
        batch = [
            NewImage("/p/c.jpg", 3, 3, "c", 3, 3, _unit(10), signature),
            NewImage("/p/a.jpg", 4, 4, "a2", 4, 4, _unit(11)),  # a changed file: its old row goes
            NewImage("/p/d.jpg", 5, 5, "d", 5, 5, _unit(12), signature),
        ]
        ids = catalog.add_indexed(batch)
        assert ids == [first[1] + 1, first[1] + 2, first[1] + 3]
        records = catalog.images_by_id(ids)
        assert [records[i].path for i in ids] == ["/p/c.jpg", "/p/a.jpg", "/p/d.jpg"]
        assert [records[i].content_hash for i in ids] == ["c", "a2", "d"]
        for image_id, image in zip(ids, batch):
            np.testing.assert_array_equal(catalog.embedding(image_id), image.vector)
        assert catalog.signatures(ids) == {ids[0]: signature, ids[2]: signature}
        assert catalog.embedding_ids().tolist() == ids and set(catalog.tombstones().tolist()) == set(first)
        # A path given twice in one batch: the later row wins, as if they came one after the other.
        [_, last] = catalog.add_indexed(
            [NewImage("/p/e.jpg", 6, 6, "e1", 6, 6, _unit(13)), NewImage("/p/e.jpg", 7, 7, "e2", 7, 7, _unit(14))]
        )
        assert catalog.image_by_path("/p/e.jpg") == catalog.images_by_id([last])[last]
        assert catalog.images_by_id([last])[last].content_hash == "e2" and catalog.count() == 4
    finally:
        catalog.close()


def test_batch_lookups_by_path_and_by_hash_cover_more_than_one_query(tmp_path: Path) -> None:
    catalog = Catalog.open(tmp_path / "idx", create=True)
    try:
        images = [NewImage(f"/p/{n:04d}.jpg", n, n, f"h{n % 700}", 1, 1, _unit(n)) for n in range(1200)]
        catalog.add_indexed(images)
        catalog.add_skipped("/p/bad.jpg", 1, 1, "not an image")
        wanted = [image.path for image in images[::2]] + ["/p/bad.jpg", "/p/missing.jpg"]
        found = catalog.images_by_paths(wanted)
        assert sorted(found) == sorted(wanted[:-1]) and found["/p/bad.jpg"].status == "skipped"
        assert found["/p/0998.jpg"].size == 998
        hashes = [f"h{n}" for n in range(0, 1400, 2)]
        assert catalog.indexed_hashes(hashes) == {f"h{n}" for n in range(0, 700, 2)}
    finally:
        catalog.close()


def test_a_catalog_knows_which_folders_it_holds_files_under(tmp_path: Path) -> None:
    """What lets the first scan of a folder skip the diff: no row under it, nothing to compare."""
    catalog = Catalog.open(tmp_path / "idx", create=True)
    try:
        catalog.add_indexed([NewImage("/photos/2024/a.jpg", 1, 1, "h", 1, 1, _unit(1))])
        catalog.add_skipped("/scans/bad.jpg", 1, 1, "not an image")
        assert catalog.has_images_under("/photos") and catalog.has_images_under("/photos/2024")
        assert catalog.has_images_under("/scans") and catalog.has_images_under("/")
        # A name that only starts the same, a sibling or a subfolder without files is another folder.
        assert not catalog.has_images_under("/photos/2024/a.jpg")
        assert not catalog.has_images_under("/photo") and not catalog.has_images_under("/photos/2025")
        assert not catalog.has_images_under("/photos/20")
    finally:
        catalog.close()
