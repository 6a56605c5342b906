"""The SQLite catalog: the source of truth for a collection.

It holds one row per image file (indexed or skipped, with the reason), the
embedding of every indexed image (or, for a Ray ingest's, where in a shard file
beside it the embedding lives: embedding_shards.py), the ids that were removed but may still sit
in the Faiss file (tombstones), and key/value metadata (embedder identity,
index spec and the checksum of the last Faiss file written). Paths are stored
as the raw bytes the OS gave, so names that are not valid UTF-8 survive.

Writes happen in short transactions (one per ingest batch) in WAL mode, so a
reader (a search, the server) never waits for an ingest and an interrupted
ingest keeps every batch it committed.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import catalog_file
from .catalog_duplicates import DuplicateTables, StoredSignature
from .catalog_embeddings import EmbeddingTables
from .catalog_schema import MIGRATIONS as MIGRATIONS  # re-exported: the schema ladder, as before
from .catalog_schema import SCHEMA_VERSION as SCHEMA_VERSION
from .catalog_schema import climb_from_nothing, climb_to_current
from .errors import CollectionNotFoundError
from .vector_integrity import vector_checksum

CATALOG_FILE = "catalog.sqlite"
IMAGE_COLUMNS = "id, path, size, mtime_ns, content_hash, width, height, status, error"


@dataclass(frozen=True)
class ImageRecord:
    """One row of the catalog."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    status: str
    error: str | None

    def file_unchanged(self) -> bool:
        """True when the file at `path` still has the size and mtime recorded when it was indexed."""
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        return info.st_size == self.size and info.st_mtime_ns == self.mtime_ns


@dataclass(frozen=True)
class NewImage:
    """An image ready to be stored: its file facts and, for indexed ones, its embedding."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    width: int
    height: int
    vector: np.ndarray | None  # None only for an image with a location: its vector is in a shard file
    signature: StoredSignature | None = None  # older callers and reused rows without one store none
    # (shard id, row, CRC-32 of the row's bytes) when the vector is a row of a registered shard file
    # (embedding_shards.py): only its place and checksum go into the catalog. None: the vector is stored in the
    # catalog itself.
    location: tuple[int, int, int] | None = None


def _vector_bytes(image: NewImage) -> bytes:
    if image.vector is None:
        raise ValueError(f"{image.path}: an image stored without a shard file's location needs its vector")
    return np.ascontiguousarray(image.vector, dtype=np.float32).tobytes()


def encode_path(path: str) -> bytes:
    """The OS bytes of a path (surrogate-escaped names round-trip)."""
    return os.fsencode(path)


# The rows whose file lies under a folder, with the parameters `folder_bounds` gives: a range of the path index.
UNDER_FOLDER = "path >= ? AND path < ?"


def folder_bounds(folder: str) -> tuple[bytes, bytes]:
    """The encoded paths that bound those under `folder`: its path with a separator, and the first path after
    every one that starts so (the separator's byte plus one)."""
    prefix = encode_path(os.path.join(folder, ""))
    return prefix, prefix[:-1] + bytes([prefix[-1] + 1])


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def decode_path(raw: bytes) -> str:
    """The str form of stored path bytes (what os.fsdecode gives, without its per-call lookups)."""
    return bytes(raw).decode(_FS_ENCODING, _FS_ERRORS)


class Catalog(EmbeddingTables, DuplicateTables):
    """A connection to one collection's SQLite catalog."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path

    @classmethod
    def open(cls, folder: Path | str, create: bool = False) -> Catalog:
        """Open the catalog in `folder`; with `create`, make the folder and an empty catalog (atomically)."""
        folder = Path(folder)
        path = folder / CATALOG_FILE
        if not path.is_file():
            if not create:
                raise CollectionNotFoundError(f"no lookalike collection in {folder}")
            catalog_file.create(path, climb_from_nothing)
        catalog = cls(catalog_file.connect(path), path)
        try:
            climb_to_current(catalog.connection, catalog.path, catalog.transaction)
        except BaseException:
            catalog.close()
            raise
        return catalog

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()

    def transaction(self) -> catalog_file.Transaction:
        """A context manager: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""
        return catalog_file.Transaction(self.connection, self.path)

    # --- metadata -------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A metadata value, or `default`."""
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, values: dict[str, str]) -> None:
        """Set several metadata values in one transaction."""
        with self.transaction():
            self.connection.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    def all_meta(self) -> dict[str, str]:
        """Every metadata key and value."""
        return dict(self.connection.execute("SELECT key, value FROM meta"))

    def change_marker(self) -> tuple[int, int]:
        """Changes whenever this connection or another process commits to the catalog."""
        return self.connection.execute("PRAGMA data_version").fetchone()[0], self.connection.total_changes

    # --- reading images --------------------------------------------------------

    def image_by_path(self, path: str) -> ImageRecord | None:
        """The row of the file at `path`, if any."""
        row = self.connection.execute(
            f"SELECT {IMAGE_COLUMNS} FROM images WHERE path = ?", (encode_path(path),)
        ).fetchone()
        return record_from_row(row) if row else None

    def images_by_id(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        """Rows for the given ids (missing ids are left out)."""
        rows = self._select_by_ids(f"SELECT {IMAGE_COLUMNS} FROM images WHERE id IN ({{marks}})", ids)
        return {row[0]: record_from_row(row) for row in rows}

    def indexed_paths(self, ids: Iterable[int]) -> dict[int, str]:
        """Paths of the given ids that are indexed (the hot path of every search: two columns, one query)."""
        rows = self._select_by_ids("SELECT id, path FROM images WHERE status = 'indexed' AND id IN ({marks})", ids)
        return {row[0]: decode_path(row[1]) for row in rows}

    def _select_by_ids(self, query: str, ids: Iterable[int]) -> Iterator[tuple]:
        """Run `query` (with an `IN ({marks})` slot) over `ids`, 500 at a time (SQLite's variable limit)."""
        return self._select_in(query, [int(i) for i in ids])

    def _select_in(self, query: str, values: list) -> Iterator[tuple]:
        """Run `query` (with an `IN ({marks})` slot) over `values`, 500 at a time (SQLite's variable limit)."""
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            yield from self.connection.execute(query.format(marks=",".join("?" * len(chunk))), chunk).fetchall()

    def images_by_paths(self, paths: Iterable[str]) -> dict[str, ImageRecord]:
        """Rows of the files at `paths`, by path (paths without a row are left out): one query per 500 paths."""
        query = f"SELECT {IMAGE_COLUMNS} FROM images WHERE path IN ({{marks}})"
        records = (record_from_row(row) for row in self._select_in(query, [encode_path(p) for p in paths]))
        return {record.path: record for record in records}

    def has_images_under(self, folder: str) -> bool:
        """True when a row (indexed or skipped) has its file under `folder`: one range lookup in the path index."""
        query = f"SELECT 1 FROM images WHERE {UNDER_FOLDER} LIMIT 1"
        return self.connection.execute(query, folder_bounds(folder)).fetchone() is not None

    def indexed_with_hash(self, content_hash: str) -> list[ImageRecord]:
        """Indexed rows whose file content has this hash."""
        rows = self.connection.execute(
            f"SELECT {IMAGE_COLUMNS} FROM images WHERE content_hash = ? AND status = 'indexed' ORDER BY id",
            (content_hash,),
        )
        return [record_from_row(row) for row in rows]

    def indexed_hashes(self, content_hashes: Iterable[str]) -> set[str]:
        """Which of these content hashes an indexed row has: one query per 500 hashes, for a whole batch of files."""
        query = "SELECT DISTINCT content_hash FROM images WHERE status = 'indexed' AND content_hash IN ({marks})"
        return {row[0] for row in self._select_in(query, list(set(content_hashes)))}

    def skipped_images(self) -> list[ImageRecord]:
        """Every file that was skipped, with its reason."""
        rows = self.connection.execute(f"SELECT {IMAGE_COLUMNS} FROM images WHERE status = 'skipped' ORDER BY path")
        return [record_from_row(row) for row in rows]

    def count(self, status: str = "indexed") -> int:
        """How many rows have `status`."""
        return self.connection.execute("SELECT count(*) FROM images WHERE status = ?", (status,)).fetchone()[0]

    def max_image_id(self) -> int:
        """The largest id ever handed out (0 for an empty catalog)."""
        row = self.connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'images'").fetchone()
        return int(row[0]) if row else 0

    # --- writing ---------------------------------------------------------------

    def add_indexed(self, images: list[NewImage]) -> list[int]:
        """Store images and their embeddings in one transaction; return their new ids, in order."""
        paths = [encode_path(image.path) for image in images]
        if len(set(paths)) < len(paths):  # a path given twice: each later row replaces the one before, in order
            with self.transaction():
                return [image_id for image in images for image_id in self.add_indexed([image])]
        with self.transaction():
            self._delete_paths(paths)
            # Ids are given here, as AUTOINCREMENT would give them, so each table takes the batch in one statement.
            first = self._next_image_id()
            ids = list(range(first, first + len(images)))
            self.connection.executemany(
                "INSERT INTO images (id, path, size, mtime_ns, content_hash, width, height, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'indexed')",
                [
                    (image_id, path, image.size, image.mtime_ns, image.content_hash, image.width, image.height)
                    for image_id, path, image in zip(ids, paths, images)
                ],
            )
            self._insert_vectors([(image_id, image) for image_id, image in zip(ids, images) if image.location is None])
            self.connection.executemany(
                "INSERT INTO embedding_locations (image_id, shard, shard_row, crc) VALUES (?, ?, ?, ?)",
                [(image_id, *image.location) for image_id, image in zip(ids, images) if image.location is not None],
            )
            self._insert_signatures(
                [(image_id, image.signature) for image_id, image in zip(ids, images) if image.signature is not None]
            )
        return ids

    def _insert_vectors(self, rows: list[tuple[int, NewImage]]) -> None:
        """Store these images' vectors in the catalog, with their checksums; the caller holds the transaction."""
        blobs = [(image_id, _vector_bytes(image)) for image_id, image in rows]
        self.connection.executemany("INSERT INTO embeddings (image_id, vector) VALUES (?, ?)", blobs)
        self.connection.executemany(
            "INSERT OR REPLACE INTO embedding_checksums (image_id, crc) VALUES (?, ?)",
            [(image_id, vector_checksum(blob)) for image_id, blob in blobs],
        )

    def _insert_signatures(self, rows: list[tuple[int, StoredSignature]]) -> None:
        """`_insert_signature` for a whole batch, in one statement; the caller holds the transaction."""
        self.connection.executemany(
            "INSERT OR REPLACE INTO signatures (image_id, signature, jpeg_quality, metadata_fields)"
            " VALUES (?, ?, ?, ?)",
            [(image_id, stored.signature, stored.jpeg_quality, stored.metadata_fields) for image_id, stored in rows],
        )

    def _next_image_id(self) -> int:
        """The id AUTOINCREMENT would give the next row: above every id ever handed out (the caller holds the
        write transaction, so no other writer takes it meanwhile)."""
        row = self.connection.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'images'), 0),"
            " coalesce((SELECT max(id) FROM images), 0))"
        ).fetchone()
        return int(row[0]) + 1

    def add_skipped(self, path: str, size: int, mtime_ns: int, reason: str) -> None:
        """Record a file that could not be indexed, and why (replacing any older row for it)."""
        with self.transaction():
            self._delete_path(path)
            self.connection.execute(
                "INSERT INTO images (path, size, mtime_ns, status, error) VALUES (?, ?, ?, 'skipped', ?)",
                (encode_path(path), size, mtime_ns, reason),
            )

    def move_image(self, image_id: int, new_path: str, size: int, mtime_ns: int) -> None:
        """Point an indexed row at the place its file moved to (its id and vector stay)."""
        with self.transaction():
            self._delete_path(new_path)
            self.connection.execute(
                "UPDATE images SET path = ?, size = ?, mtime_ns = ? WHERE id = ?",
                (encode_path(new_path), size, mtime_ns, image_id),
            )

    def remove_images(self, ids: Iterable[int]) -> int:
        """Delete rows and their vectors; their ids become tombstones until the index is rebuilt."""
        ids = [int(i) for i in ids]
        with self.transaction():
            for image_id in ids:
                self._delete_id(image_id)
        return len(ids)

    def queue_for_reembedding(self, ids: Iterable[int], reason: str) -> None:
        """Drop these images' stored vectors and mark their rows so that the next scan embeds them again."""
        with self.transaction():
            for image_id in ids:
                had_vector = self._drop_vector(image_id)
                self.connection.execute("DELETE FROM embedding_checksums WHERE image_id = ?", (image_id,))
                # size -1 matches no file: the next scan sees the file as changed and embeds it.
                self.connection.execute(
                    "UPDATE images SET status = 'skipped', error = ?, size = -1 WHERE id = ?", (reason, image_id)
                )
                if had_vector:
                    self.connection.execute("INSERT OR IGNORE INTO tombstones (id) VALUES (?)", (image_id,))

    def _delete_path(self, path: str) -> None:
        self._delete_paths([encode_path(path)])

    def _delete_paths(self, paths: list[bytes]) -> None:
        """Delete the rows at these (encoded) paths, if any: one query per 500 paths finds them."""
        for (image_id,) in list(self._select_in("SELECT id FROM images WHERE path IN ({marks})", paths)):
            self._delete_id(image_id)

    def _drop_vector(self, image_id: int) -> bool:
        """Delete an image's stored vector, or its reference to a shard file's row (the row becomes garbage)."""
        in_table = self.connection.execute("DELETE FROM embeddings WHERE image_id = ?", (image_id,)).rowcount
        located = self.connection.execute("DELETE FROM embedding_locations WHERE image_id = ?", (image_id,)).rowcount
        return bool(in_table or located)

    def _delete_id(self, image_id: int) -> None:
        had_vector = self._drop_vector(image_id)
        self.connection.execute("DELETE FROM images WHERE id = ?", (image_id,))
        if had_vector:
            self.connection.execute("INSERT OR IGNORE INTO tombstones (id) VALUES (?)", (image_id,))

    def tombstones(self) -> np.ndarray:
        """Ids removed from the catalog that a Faiss file built earlier may still hold."""
        return np.fromiter((row[0] for row in self.connection.execute("SELECT id FROM tombstones")), dtype=np.int64)

    def clear_tombstones(self, up_to_id: int) -> None:
        """Forget tombstones an index rebuilt from the catalog no longer holds."""
        with self.transaction():
            self.connection.execute("DELETE FROM tombstones WHERE id <= ?", (up_to_id,))

    def pages(self, query: str, after: int, batch_size: int) -> Iterator[list[tuple]]:
        """Keyset pagination: `query` takes (last key, limit) and returns rows keyed by their first column.

        Each page is fetched whole, so no statement stays open across the caller's own writes.
        """
        while rows := self.connection.execute(query, (after, batch_size)).fetchall():
            yield rows
            after = rows[-1][0]


def record_from_row(row: tuple) -> ImageRecord:
    return ImageRecord(row[0], decode_path(row[1]), *row[2:])
