"""Reading stored embeddings, wherever they live: a BLOB in the catalog or a row of a shard file beside it.

Kept out of `catalog.py` so that module stays about rows and writes; `Catalog` inherits these methods. Every
reader of stored vectors goes through them, and each gives the same answer for a vector in the `embeddings` table
(local ingest, copies, restored quarantined rows, catalogs older than schema 4) and one in a shard file (Ray
ingest, `embedding_shards.py`). Both carry a CRC-32 per vector, checked on every read; a damaged vector is never
ranked, and a missing or damaged shard file is one CorruptCatalogError naming it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .embedding_shards import ShardFiles, remove_file, stored_signature
from .errors import CorruptCatalogError, NotIndexedError
from .vector_integrity import checked_vectors, intact_rows, sound_vectors

if TYPE_CHECKING:
    from .catalog_duplicates import StoredSignature
    from .catalog_file import Transaction

# Stored vectors with their checksums (None for a row without one).
_WITH_CHECKSUMS = "FROM embeddings e LEFT JOIN embedding_checksums c ON c.image_id = e.image_id"
# Both places in one id order: (id, vector bytes or NULL, crc, shard or NULL, row or NULL). A compound SELECT's
# ORDER BY merges the two sides, each read in rowid order, so a page never sorts the whole catalog.
_BOTH_AFTER = (
    f"SELECT e.image_id, e.vector, c.crc, NULL, NULL {_WITH_CHECKSUMS} WHERE e.image_id > ?1"
    " UNION ALL SELECT image_id, NULL, crc, shard, shard_row FROM embedding_locations WHERE image_id > ?1"
    " ORDER BY 1 LIMIT ?2"
)
_LOCATED = "SELECT image_id, NULL, crc, shard, shard_row FROM embedding_locations"
_IDS = "SELECT image_id FROM embeddings UNION ALL SELECT image_id FROM embedding_locations ORDER BY 1"


class EmbeddingTables:
    """Catalog methods that read stored embeddings (mixed into `Catalog`)."""

    connection: Any  # sqlite3.Connection, set by Catalog
    path: Path

    def _select_by_ids(self, query: str, ids: Iterable[int]) -> Iterator[tuple]:  # pragma: no cover
        raise NotImplementedError

    def pages(self, query: str, after: int, batch_size: int) -> Iterator[list[tuple]]:  # pragma: no cover
        raise NotImplementedError

    def transaction(self) -> Transaction:  # pragma: no cover - provided by Catalog
        raise NotImplementedError

    @property
    def shard_files(self) -> ShardFiles:
        files = getattr(self, "_shard_files", None)
        if files is None:
            files = self._shard_files = ShardFiles(self.path.parent)
        return files

    def embedding(self, image_id: int) -> np.ndarray | None:
        """The stored vector of one image (CorruptCatalogError if its bytes are damaged)."""
        row = self.connection.execute(
            f"SELECT e.vector, c.crc {_WITH_CHECKSUMS} WHERE e.image_id = ?", (image_id,)
        ).fetchone()
        if row is None:
            located = self.connection.execute(f"{_LOCATED} WHERE image_id = ?", (image_id,)).fetchall()
            if not located:
                return None
            row = self._resolved(located)[0][1:]
        vector = np.frombuffer(row[0], dtype=np.float32).copy()
        if not (intact_rows([row])[0] and sound_vectors(vector[None], len(row[0]))[0]):
            raise CorruptCatalogError(
                f"the stored embedding of image {image_id} in {self.path} is damaged: repair the collection, "
                "or index its folder again"
            )
        return vector

    def require_embedding(self, image_id: int) -> np.ndarray:
        """The stored vector of an image that has one (NotIndexedError otherwise)."""
        vector = self.embedding(image_id)
        if vector is None:
            raise NotIndexedError(f"no indexed image has id {image_id}")
        return vector

    def embeddings_of(self, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids ascending, float32 vectors) of the sound stored embeddings among `ids` (damaged ones left out)."""
        ids = [int(i) for i in ids]
        in_table = self._select_by_ids(
            f"SELECT e.image_id, e.vector, c.crc {_WITH_CHECKSUMS} WHERE e.image_id IN ({{marks}})", ids
        )
        located = self._select_by_ids(f"{_LOCATED} WHERE image_id IN ({{marks}})", ids)
        return checked_vectors(sorted([*in_table, *self._resolved(list(located))]))

    def iter_embeddings(self, after_id: int = 0, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids int64, vectors float32) in id order, `batch_size` rows at a time, streaming."""
        for rows in self.pages(_BOTH_AFTER, after_id, batch_size):
            ids, vectors = checked_vectors(self._resolved(rows))  # damaged rows are left out: never ranked
            if len(ids):
                yield ids, vectors

    def sample_embeddings(self, count: int, seed: int = 1338) -> np.ndarray:
        """Up to `count` stored vectors picked at random (for training an index)."""
        total = self.count_embeddings()
        if total <= count:
            parts = [vectors for _, vectors in self.iter_embeddings()]
            return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
        chosen = np.random.default_rng(seed).choice(self.embedding_ids(), size=count, replace=False)
        chosen.sort()
        return self.embeddings_of(chosen.tolist())[1]

    def embedding_ids(self) -> np.ndarray:
        """Every image id that has a stored embedding, ascending."""
        return np.fromiter((row[0] for row in self.connection.execute(_IDS)), dtype=np.int64)

    def count_embeddings(self) -> int:
        """How many vectors are stored."""
        return int(
            self.connection.execute(
                "SELECT (SELECT count(*) FROM embeddings) + (SELECT count(*) FROM embedding_locations)"
            ).fetchone()[0]
        )

    # --- shard files -------------------------------------------------------------

    def _resolved(self, rows: list[tuple]) -> list[tuple]:
        """(id, vector bytes or None, crc, shard, row) rows as (id, vector bytes, crc): shard rows read from files."""
        if all(row[1] is not None for row in rows):
            return [row[:3] for row in rows]
        shards = self._shards({row[3] for row in rows if row[1] is None})
        return [
            row[:3]
            if row[1] is not None
            else (row[0], self.shard_files.array(*shards[row[3]])[row[4]].tobytes(), row[2])
            for row in rows
        ]

    def _shards(self, ids: set[int]) -> dict[int, tuple[str, int, int]]:
        """Shard id -> (file name, rows, dim), as registered."""
        query = "SELECT id, name, row_count, dim FROM embedding_shards WHERE id IN ({marks})"
        found = {row[0]: (row[1], row[2], row[3]) for row in self._select_by_ids(query, ids)}
        for missing in ids - found.keys():
            raise CorruptCatalogError(
                f"{self.path} refers to embedding shard {missing}, which it does not list: repair the collection"
            )
        return found

    def signatures_in_shard_files(self, ids: set[int]) -> dict[int, StoredSignature]:
        """The signatures of these images that live in the records of their shard file (files of bare vectors,
        and images without a signature, are left out)."""
        located = list(self._select_by_ids("SELECT image_id, shard, shard_row FROM embedding_locations"
                                           " WHERE image_id IN ({marks})", ids))  # fmt: skip
        if not located:
            return {}
        shards = self._shards({shard for _, shard, _ in located})
        found = {}
        for image_id, shard, row in located:
            records = self.shard_files.records(*shards[shard])
            stored = None if records is None else stored_signature(records[row])
            if stored is not None:
                found[image_id] = stored
        return found

    def damaged_shard_embeddings(self, dim: int) -> list[int]:
        """Ids of vectors in shard files that fail their checksum or are not finite unit vectors, and of every
        vector in a file that is missing or damaged (what a repair embeds again)."""
        damaged: list[int] = []
        query = f"{_LOCATED} WHERE image_id > ? ORDER BY 1 LIMIT ?"
        for rows in self.pages(query, 0, 4096):
            readable, unreadable = self._readable(rows)
            damaged += unreadable
            intact = intact_rows(readable)
            damaged += [row[0] for row, ok in zip(readable, intact) if not ok or len(row[1]) != dim * 4]
            right = [row for row, ok in zip(readable, intact) if ok and len(row[1]) == dim * 4]
            if right:
                vectors = np.frombuffer(b"".join(row[1] for row in right), dtype=np.float32).reshape(len(right), dim)
                damaged += [row[0] for row, ok in zip(right, sound_vectors(vectors, dim * 4)) if not ok]
        return sorted(damaged)

    def _readable(self, rows: list[tuple]) -> tuple[list[tuple], list[int]]:
        """Shard rows as (id, vector bytes, crc) where their file can be read, and the ids of those where not."""
        query = "SELECT id, name, row_count, dim FROM embedding_shards WHERE id IN ({marks})"
        shards = {row[0]: (row[1], row[2], row[3]) for row in self._select_by_ids(query, {row[3] for row in rows})}
        readable, unreadable = [], []
        for row in rows:
            try:
                array = self.shard_files.array(*shards[row[3]])
                readable.append((row[0], array[row[4]].tobytes(), row[2]))
            except (KeyError, IndexError, CorruptCatalogError):
                unreadable.append(row[0])
        return readable, unreadable

    def unreferenced_shard_files(self) -> list[str]:
        """Shard files no image's vector lives in (a crashed commit's, or every row removed, on disk or only
        registered), and scratch files of interrupted shard writes. Reads every image's place: for a repair.
        Only a writer holding the folder's lock may remove them (`remove_shard_files`)."""
        referenced = {
            row[0]
            for row in self.connection.execute(
                "SELECT name FROM embedding_shards WHERE id IN (SELECT DISTINCT shard FROM embedding_locations)"
            )
        }
        registered = [row[0] for row in self.connection.execute("SELECT name FROM embedding_shards")]
        return sorted({*self.shard_files.names_on_disk(), *registered} - referenced)

    def unregistered_shard_files(self) -> list[str]:
        """Files in the shard folder the catalog does not list: a driver killed between writing a shard's file and
        committing it, and scratch files of interrupted writes. Cheap (the images' rows are not read), so every
        update removes them, holding the folder's lock (`remove_shard_files`)."""
        registered = {row[0] for row in self.connection.execute("SELECT name FROM embedding_shards")}
        return [name for name in self.shard_files.names_on_disk() if name not in registered]

    def unreadable_shard_files(self) -> list[str]:
        """Names of the shard files images refer to that are missing or damaged."""
        query = (
            "SELECT name, row_count, dim FROM embedding_shards"
            " WHERE id IN (SELECT DISTINCT shard FROM embedding_locations) ORDER BY name"
        )
        unreadable = []
        for name, rows, dim in self.connection.execute(query).fetchall():
            try:
                self.shard_files.array(name, rows, dim)
            except CorruptCatalogError:
                unreadable.append(name)
        return unreadable

    def remove_shard_files(self, names: list[str]) -> None:
        """Forget and delete shard files no image refers to, as listed above (the caller holds the lock)."""
        if not names:
            return
        with self.transaction():
            self.connection.executemany("DELETE FROM embedding_shards WHERE name = ?", [(name,) for name in names])
        for name in names:
            remove_file(self.path.parent, name)

    def register_shard(self, name: str, rows: int, dim: int) -> int:
        """Record a shard file written by `embedding_shards.write_shard`; the caller holds the transaction that
        commits the rows referring to it. Returns the shard's id."""
        cursor = self.connection.execute(
            "INSERT INTO embedding_shards (name, row_count, dim) VALUES (?, ?, ?)", (name, rows, dim)
        )
        return int(cursor.lastrowid or 0)


def row_checksum(vector: np.ndarray) -> int:
    """The CRC-32 of a float32 row's bytes, the same as `vector_integrity.vector_checksum` of its BLOB."""
    return zlib.crc32(np.ascontiguousarray(vector, dtype=np.float32).data)
