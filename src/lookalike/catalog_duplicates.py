"""The catalog's duplicate-finding tables: pixel signatures, review decisions and quarantined rows.

Kept out of `catalog.py` so that module stays about images and embeddings; `Catalog` inherits these methods.

- `signatures`: one 32 x 32 grey thumbnail (signatures.py) and the JPEG quality per indexed image, written in
  the same transaction as the image's row, deleted with it (ON DELETE CASCADE).
- `decisions` and `decision_files`: what a person decided in a review ("not-duplicates", "keep-all"), keyed by
  content hash rather than image id, so a decision survives a re-index, a move or a rename.
- `quarantined`: the row, embedding and signature of each file a duplicate action moved out of the collection,
  keyed by its old image id, so undoing the move restores the row without running the model.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .catalog_file import Transaction

DECISION_KINDS = ("not-duplicates", "keep-all")

# Version 2 of the schema: the tables above (catalog.MIGRATIONS[1]).
SCHEMA_2 = """
CREATE TABLE signatures (
    image_id INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    signature BLOB NOT NULL,
    jpeg_quality INTEGER,
    metadata_fields INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('not-duplicates', 'keep-all')),
    made_ns INTEGER NOT NULL
);
CREATE TABLE decision_files (
    decision_id INTEGER NOT NULL REFERENCES decisions (id) ON DELETE CASCADE,
    content_hash TEXT NOT NULL,
    PRIMARY KEY (decision_id, content_hash)
);
CREATE TABLE quarantined (
    image_id INTEGER PRIMARY KEY,
    path BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    vector BLOB NOT NULL,
    signature BLOB,
    jpeg_quality INTEGER,
    metadata_fields INTEGER
)
"""


@dataclass(frozen=True)
class StoredSignature:
    """An image's pixel signature, the quality a JPEG was saved with, and how many metadata fields the file has."""

    signature: bytes
    jpeg_quality: int | None
    metadata_fields: int = 0  # EXIF tags, text chunks, XMP: "richer metadata" wins a keeper tie


@dataclass(frozen=True)
class QuarantinedRow:
    """What the catalog kept of a file moved out of the collection: enough to put its row back."""

    image_id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str
    width: int | None
    height: int | None
    vector: np.ndarray
    signature: StoredSignature | None


class DuplicateTables:
    """Catalog methods over the tables of schema version 2 (mixed into `Catalog`)."""

    connection: Any  # sqlite3.Connection, set by Catalog

    def transaction(self) -> Transaction:  # pragma: no cover - provided by Catalog
        raise NotImplementedError

    def _select_by_ids(self, query: str, ids: Iterable[int]) -> Iterator[tuple]:  # pragma: no cover
        raise NotImplementedError

    def signatures_in_shard_files(self, ids: set[int]) -> dict[int, StoredSignature]:  # pragma: no cover
        raise NotImplementedError  # provided by Catalog (catalog_embeddings.py)

    # --- signatures --------------------------------------------------------------

    def signatures(self, ids: Iterable[int]) -> dict[int, StoredSignature]:
        """Stored signatures of the given ids (ids without one are left out): in this table, or in the shard file
        that holds the image's vector (a cluster ingest's, embedding_shards.py)."""
        ids = list(ids)
        rows = self._select_by_ids(
            "SELECT image_id, signature, jpeg_quality, metadata_fields FROM signatures WHERE image_id IN ({marks})", ids
        )
        found = {row[0]: StoredSignature(bytes(row[1]), row[2], row[3]) for row in rows}
        if len(found) < len(ids):
            found.update(self.signatures_in_shard_files(set(ids) - found.keys()))
        return found

    def count_signatures(self) -> int:
        """How many images have a stored signature."""
        return int(self.connection.execute("SELECT count(*) FROM signatures").fetchone()[0])

    def _insert_signature(self, image_id: int, stored: StoredSignature) -> None:
        """Store a signature; the caller holds the transaction that wrote the image's row."""
        self.connection.execute(
            "INSERT OR REPLACE INTO signatures (image_id, signature, jpeg_quality, metadata_fields)"
            " VALUES (?, ?, ?, ?)",
            (image_id, sqlite3.Binary(stored.signature), stored.jpeg_quality, stored.metadata_fields),
        )

    # --- decisions ---------------------------------------------------------------

    def add_decision(self, kind: str, content_hashes: Iterable[str]) -> int:
        """Record a review decision over files with these content hashes; return its number."""
        with self.transaction():
            cursor = self.connection.execute(
                "INSERT INTO decisions (kind, made_ns) VALUES (?, ?)", (kind, time.time_ns())
            )
            decision = int(cursor.lastrowid or 0)
            self.connection.executemany(
                "INSERT OR IGNORE INTO decision_files (decision_id, content_hash) VALUES (?, ?)",
                [(decision, content_hash) for content_hash in sorted(set(content_hashes))],
            )
        return decision

    def decisions(self) -> list[tuple[str, frozenset[str]]]:
        """Every decision as (kind, content hashes), oldest first."""
        found: dict[int, tuple[str, set[str]]] = {}
        rows = self.connection.execute(
            "SELECT d.id, d.kind, f.content_hash FROM decisions d JOIN decision_files f ON f.decision_id = d.id"
            " ORDER BY d.id"
        )
        for decision, kind, content_hash in rows:
            found.setdefault(decision, (kind, set()))[1].add(content_hash)
        return [(kind, frozenset(hashes)) for kind, hashes in found.values()]

    def update_file_facts(self, image_id: int, size: int, mtime_ns: int) -> None:
        """Record a file's new size and mtime when its bytes stayed the same (a copy replaced by a hard link)."""
        with self.transaction():
            self.connection.execute("UPDATE images SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, image_id))

    # --- quarantined rows --------------------------------------------------------

    def keep_quarantined(self, row: QuarantinedRow) -> None:
        """Remember a row a move takes out of the collection (inside the move's transaction)."""
        signature = row.signature
        self.connection.execute(
            "INSERT OR REPLACE INTO quarantined (image_id, path, size, mtime_ns, content_hash, width, height,"
            " vector, signature, jpeg_quality, metadata_fields) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.image_id,
                _encode(row.path),
                row.size,
                row.mtime_ns,
                row.content_hash,
                row.width,
                row.height,
                np.ascontiguousarray(row.vector, dtype=np.float32).tobytes(),
                sqlite3.Binary(signature.signature) if signature else None,
                signature.jpeg_quality if signature else None,
                signature.metadata_fields if signature else None,
            ),
        )

    def quarantined(self, image_id: int) -> QuarantinedRow | None:
        """The kept row of an image a move took out, if the catalog has it."""
        row = self.connection.execute(
            "SELECT image_id, path, size, mtime_ns, content_hash, width, height, vector, signature, jpeg_quality,"
            " metadata_fields"
            " FROM quarantined WHERE image_id = ?",
            (image_id,),
        ).fetchone()
        if row is None:
            return None
        signature = StoredSignature(bytes(row[8]), row[9], row[10] or 0) if row[8] is not None else None
        vector = np.frombuffer(row[7], dtype=np.float32).copy()
        image_id, _, size, mtime_ns, content_hash, width, height = row[:7]
        return QuarantinedRow(image_id, _decode(row[1]), size, mtime_ns, content_hash, width, height, vector, signature)

    def forget_quarantined(self, image_id: int) -> None:
        """Drop a kept row once its file is back in the collection."""
        self.connection.execute("DELETE FROM quarantined WHERE image_id = ?", (image_id,))


def _encode(path: str) -> bytes:
    from .catalog import encode_path

    return encode_path(path)


def _decode(raw: bytes) -> str:
    from .catalog import decode_path

    return decode_path(raw)
