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
