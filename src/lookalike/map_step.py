"""The map step of ingest: a pure function from files to their facts and embeddings, and the shape of its results.

`map_files` decodes, hashes, signs and embeds a list of files; a thread, a process or a cluster task can run it
(`ray_ingest` runs it on a Ray cluster). Its result, a `MappedShard`, is one tuple of plain values per file and one
float32 array of all the embeddings, cheap to pickle and to take in; `Ingester.commit_mapped` commits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .catalog_duplicates import StoredSignature
from .catalog_embeddings import row_checksum
from .decode_pool import DecodedFile, Outcome, decode_files, prepare_file
from .embedders import Embedder
from .embedding_shards import write_shard
from .files import FileEntry


@dataclass(frozen=True)
class MappedImage:
    """The map step's result for one file: its facts and embedding, or why it was skipped. Picklable."""

    entry: FileEntry
    content_hash: str = ""
    width: int = 0
    height: int = 0
    vector: np.ndarray | None = None
    error: str | None = None
    signature: StoredSignature | None = None


class MappedRow(NamedTuple):
    """The map step's facts of one file, as plain values; `error` is None for a file that was embedded."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    width: int
    height: int
    error: str | None
    signature: bytes | None
    jpeg_quality: int | None
    metadata_fields: int

    def stored_signature(self) -> StoredSignature | None:
        return (
            None if self.signature is None else StoredSignature(self.signature, self.jpeg_quality, self.metadata_fields)
        )


@dataclass(frozen=True)
class MappedShard:
    """The map step's results for a group of files, in the form that is cheap to send and to take in.

    One tuple of plain values per file and one float32 array of all the embeddings: a driver that takes in
    thousands of files a second unpickles a few objects per shard, not an object graph and an array per file.
    `vectors` holds a row for each file without an error, in file order. Indexing gives `MappedImage`s.
    """

    rows: list[MappedRow]
    vectors: np.ndarray
    # Set when the worker wrote the shard file itself into a collection folder it shares with the driver
    # (`written_where_shared`): the file's name and each row's CRC-32; `vectors` is then empty, of the right width.
    file: str | None = None
    checksums: list[int] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def rows_in_file(self) -> int:
        """The rows of the shard file: one per file without an error."""
        return len(self.vectors) if self.checksums is None else len(self.checksums)

    def checksum(self, number: int) -> int:
        """The CRC-32 of row `number` of the shard file."""
        return row_checksum(self.vectors[number]) if self.checksums is None else self.checksums[number]

    def write_file(self, collection: Path) -> str:
        """Write the embeddings and signatures as one new shard file of the collection in `collection`; its name."""
        return write_shard(collection, self.vectors, [row.stored_signature() for row in self.rows if row.error is None])

    def written_where_shared(self, collection: Path) -> MappedShard:
        """Write the shard file into `collection` (a folder this worker shares with the driver) and return what is
        left to send: the rows without their signatures, the file's name and each vector's checksum. The driver
        then takes in and writes no per-image bytes but the catalog's rows."""
        name = self.write_file(collection)
        checksums = [self.checksum(number) for number in range(len(self.vectors))]
        rows = [row._replace(signature=None) for row in self.rows]
        return MappedShard(rows, self.vectors[:0].copy(), name, checksums)

    def __getitem__(self, index: int) -> MappedImage:
        row = self.rows[index]
        entry = FileEntry(row.path, row.size, row.mtime_ns)
        if row.error is not None:
            return MappedImage(entry, error=row.error)
        if self.file is not None:
            raise LookupError(f"the vectors of this shard are in the file {self.file}, not in the shard")
        vector = self.vectors[sum(other.error is None for other in self.rows[:index])]
        return MappedImage(entry, row.content_hash, row.width, row.height, vector, None, row.stored_signature())


def map_files(
    entries: list[FileEntry],
    embedder: Embedder,
    input_size: int,
    max_megapixels: float | None = None,
    batch: int = 32,
    decode_threads: int = 0,
) -> MappedShard:
    """Decode and embed files, `batch` at a time (a shard's pixels are never all held at once): a pure function
    of the files, for a worker process or a cluster task.

    With `decode_threads`, that many threads decode ahead of the model, as a local ingest decodes
    (`decode_pool.decode_files`): a task that holds several CPUs, or whose model runs on a GPU, decodes while the
    model runs instead of between its runs. 0 decodes one file after another in this thread. On a GPU the batch
    is at least the embedder's forward batch, and JPEGs are decoded on the GPU where it can (nvJPEG).
    """
    if embedder.device == "cuda":
        batch = max(batch, embedder.forward_batch)  # small batches leave the device idle
    decoder = embedder.file_decoder()
    if decode_threads > 0:
        outcomes = decode_files(
            iter(entries), len(entries), input_size, max_megapixels, decode_threads, "threads", decoder=decoder
        )
    else:
        outcomes = ((entry, prepare_file(entry.path, input_size, max_megapixels, decoder)) for entry in entries)
    rows: list[MappedRow] = []
    vectors = [np.zeros((0, embedder.dim), np.float32)]
    chunk: list[tuple[FileEntry, Outcome]] = []
    for outcome in outcomes:
        chunk.append(outcome)
        if len(chunk) >= batch:
            vectors += _embedded(chunk, embedder)
            rows += [_mapped_row(entry, decoded) for entry, decoded in chunk]
            chunk = []
    vectors += _embedded(chunk, embedder)
    rows += [_mapped_row(entry, decoded) for entry, decoded in chunk]
    return MappedShard(rows, np.concatenate(vectors))


def _embedded(chunk: list[tuple[FileEntry, Outcome]], embedder: Embedder) -> list[np.ndarray]:
    """The embeddings of the chunk's decoded files, as a one-array list (empty if none was decoded)."""
    good = [decoded.image.pixels for _, decoded in chunk if isinstance(decoded, DecodedFile)]
    return [np.asarray(embedder.embed(np.stack(good)), np.float32)] if good else []


def _mapped_row(entry: FileEntry, decoded: Outcome) -> MappedRow:
    if not isinstance(decoded, DecodedFile):
        return MappedRow(entry.path, entry.size, entry.mtime_ns, "", 0, 0, decoded.reason, None, None, 0)
    image, signature = decoded.image, decoded.signature
    return MappedRow(
        entry.path,
        entry.size,
        entry.mtime_ns,
        image.content_hash,
        image.width,
        image.height,
        None,
        None if signature is None else signature.signature,
        None if signature is None else signature.jpeg_quality,
        0 if signature is None else signature.metadata_fields,
    )
