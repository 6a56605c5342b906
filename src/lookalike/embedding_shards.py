"""Embeddings kept in `.npy` shard files beside the catalog, instead of one BLOB per image inside it.

A Ray ingest's driver takes in a shard's embeddings as one float32 array. Writing that array as one file and
recording per image only where its vector lives (shard, row and a CRC-32 of the row's bytes) spares the single
SQLite writer a 5 KiB BLOB per image, the largest part of what it wrote per image (docs/benchmarks.md, "Ingest on
a Ray cluster").

Order of writes, so no work is lost and nothing half-written is ever read: the file is written to a scratch name,
fsynced, renamed into `embedding-shards/` and the folder fsynced (`storage.atomic_write_with`) before the
transaction that registers it and commits its rows. A process killed between the two leaves a file no row refers
to: harmless, never read, and removed by the next update of the collection or a repair
(`Catalog.unregistered_shard_files`). A file, once renamed in place, is never written again, so readers may keep
it memory-mapped.

A shard file written with the images' pixel signatures holds one record per image instead of a bare vector: the
vector, the signature and the JPEG quality and metadata count that go with it (`signed_dtype`). The catalog then
keeps no signature row for those images either: with the vector's BLOB gone, the 1.2 KiB signature was the
largest thing left that the single writer wrote per image. Files of bare float32 rows (schema 4 as first written)
are read as before; their images' signatures are in the catalog.

Rows whose image was removed or re-embedded stay in their file, unreferenced, until every row of the file is; the
whole file is then removed by a repair. Compacting files that are partly garbage is not done yet.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .catalog_duplicates import StoredSignature
from .errors import CorruptCatalogError
from .signatures import SIGNATURE_BYTES
from .storage import SCRATCH_PATTERN, atomic_write_with, fsync_folder

SHARD_FOLDER = "embedding-shards"
SHARD_SUFFIX = ".npy"

# Version 4 of the schema (catalog_schema.MIGRATIONS[3]). `embedding_shards` lists the files; `embedding_locations`
# says, per image, which file and row hold its vector, and the row's CRC-32. The shard column has no foreign key:
# a check per inserted row would cost the driver time, and nothing deletes a registered shard that rows refer to.
SCHEMA_4 = """
CREATE TABLE embedding_shards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    row_count INTEGER NOT NULL,
    dim INTEGER NOT NULL
);
CREATE TABLE embedding_locations (
    image_id INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    shard INTEGER NOT NULL,
    shard_row INTEGER NOT NULL,
    crc INTEGER NOT NULL
);
"""


def signed_dtype(dim: int) -> np.dtype:
    """One record of a shard file with signatures: the vector first (so it starts each record on a multiple of 8
    bytes), then the signature, its length (0: the image has none), the JPEG quality (-1: not a JPEG) and the
    metadata count."""
    return np.dtype(
        [
            ("vector", "<f4", (dim,)),
            ("signature", "u1", (SIGNATURE_BYTES,)),
            ("signature_bytes", "<u2"),
            ("jpeg_quality", "<i2"),
            ("metadata_fields", "<u2"),
            ("padding", "u1", (2,)),
        ]
    )


def shard_folder(collection: Path) -> Path:
    """Where the shard files of the collection in `collection` live."""
    return collection / SHARD_FOLDER


def made_shard_folder(collection: Path) -> Path:
    """The collection's shard folder, made (durably) if it is not there yet."""
    folder = shard_folder(collection)
    if not folder.is_dir():
        folder.mkdir(exist_ok=True)
        fsync_folder(collection)  # the new folder's entry must survive a crash as the files in it will
    return folder


def write_shard(collection: Path, vectors: np.ndarray, signatures: list[StoredSignature | None] | None = None) -> str:
    """Write `vectors` (rows of float32) durably to a new shard file of the collection; return the file's name.
    With `signatures` (one per row, None for an image without one) each row is a record that holds them too.

    The name is unique (time, process, random): a crashed writer's file never collides with a later one.
    """
    folder = made_shard_folder(collection)
    name = f"{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(4)}{SHARD_SUFFIX}"
    array = np.ascontiguousarray(vectors, dtype=np.float32) if signatures is None else signed_rows(vectors, signatures)

    def write(scratch: str) -> None:
        with open(scratch, "wb") as handle:  # a file object: np.save would add ".npy" to a scratch path
            np.save(handle, array, allow_pickle=False)

    atomic_write_with(folder / name, write)
    return name


def signed_rows(vectors: np.ndarray, signatures: list[StoredSignature | None]) -> np.ndarray:
    """The records of a shard file with signatures: built a column at a time (a driver writes thousands a second)."""
    records = np.zeros(len(vectors), dtype=signed_dtype(vectors.shape[1]))
    records["vector"] = vectors
    sizes = [0 if stored is None else len(stored.signature) for stored in signatures]
    if sizes and min(sizes) == SIGNATURE_BYTES:  # every row has a whole signature: the usual case, in one copy
        joined = b"".join(stored.signature for stored in signatures if stored is not None)
        records["signature"] = np.frombuffer(joined, dtype=np.uint8).reshape(len(vectors), SIGNATURE_BYTES)
    else:
        for number, stored in enumerate(signatures):
            if stored is not None:
                records["signature"][number, : sizes[number]] = np.frombuffer(stored.signature, dtype=np.uint8)
    records["signature_bytes"] = sizes
    records["jpeg_quality"] = [
        -1 if stored is None or stored.jpeg_quality is None else stored.jpeg_quality for stored in signatures
    ]
    records["metadata_fields"] = [0 if stored is None else stored.metadata_fields for stored in signatures]
    return records


def stored_signature(record: np.void) -> StoredSignature | None:
    """The signature in one record of a shard file with signatures (None if the image has none)."""
    size = int(record["signature_bytes"])
    if size == 0:
        return None
    quality = int(record["jpeg_quality"])
    return StoredSignature(record["signature"][:size].tobytes(), None if quality < 0 else quality,
                           int(record["metadata_fields"]))  # fmt: skip


def remove_file(collection: Path, name: str) -> None:
    """Remove one shard file (never anything outside the collection's shard folder)."""
    (shard_folder(collection) / Path(name).name).unlink(missing_ok=True)


def damaged_file_error(path: Path, reason: str) -> CorruptCatalogError:
    return CorruptCatalogError(
        f"the embedding shard file {path} is {reason}: repair the collection (its images are then embedded again "
        "by the next index run), or index its folder again"
    )


class ShardFiles:
    """The shard files of one collection, memory-mapped on first use and kept (files never change once in place).

    At most MAPPED_AT_ONCE stay mapped, the least recently used let go first: a process may map only so many
    regions (65,530 by default on Linux), and 100M images make about 100,000 files of 1,024 rows.
    """

    MAPPED_AT_ONCE = 256

    def __init__(self, collection: Path) -> None:
        self.folder = shard_folder(collection)
        self._mapped: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # a served collection's readers share it

    def array(self, name: str, rows: int, dim: int) -> np.ndarray:
        """The (rows, dim) float32 vectors in file `name`, memory-mapped; CorruptCatalogError if it is not that."""
        mapped = self.mapped(name, rows, dim)
        return mapped["vector"] if mapped.dtype.names else mapped

    def records(self, name: str, rows: int, dim: int) -> np.ndarray | None:
        """The records of a file with signatures (`signed_dtype`), memory-mapped; None for a file of bare vectors."""
        mapped = self.mapped(name, rows, dim)
        return mapped if mapped.dtype.names else None

    def mapped(self, name: str, rows: int, dim: int) -> np.ndarray:
        """File `name` as it is stored, memory-mapped and kept; CorruptCatalogError if it does not hold `rows` rows
        of `dim` float32 dimensions, bare or in records with their signatures."""
        with self._lock:
            mapped = self._mapped.get(name)
            if mapped is not None:
                self._mapped.move_to_end(name)
                return mapped
        mapped = self._mapped_file(name, rows, dim)
        with self._lock:
            self._mapped[name] = mapped
            while len(self._mapped) > self.MAPPED_AT_ONCE:
                self._mapped.popitem(last=False)
        return mapped

    def _mapped_file(self, name: str, rows: int, dim: int) -> np.ndarray:
        """Map file `name`, checking it holds what the catalog registered."""
        path = self.folder / name
        if not path.is_file():
            raise damaged_file_error(path, "missing")
        try:
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise damaged_file_error(path, f"damaged ({error})") from None
        bare = mapped.dtype == np.float32 and mapped.shape == (rows, dim)
        if not bare and (mapped.dtype != signed_dtype(dim) or mapped.shape != (rows,)):
            raise damaged_file_error(path, f"damaged (it holds {mapped.dtype} {mapped.shape}, not {rows} x {dim})")
        return mapped

    def names_on_disk(self) -> list[str]:
        """The shard files and scratch files of interrupted shard writes in the folder, by name."""
        if not self.folder.is_dir():
            return []
        found = [*self.folder.glob(f"*{SHARD_SUFFIX}"), *self.folder.glob(SCRATCH_PATTERN)]
        return sorted(path.name for path in found if path.is_file())

    def bytes_on_disk(self) -> tuple[int, int]:
        """(how many shard files, their total size in bytes)."""
        sizes = [(self.folder / name).stat().st_size for name in self.names_on_disk() if name.endswith(SHARD_SUFFIX)]
        return len(sizes), sum(sizes)
