"""The map step of ingest: a pure function from files to their facts and embeddings, and the shape of its results.

`map_files` decodes, hashes, signs and embeds a list of files; a thread, a process or a cluster task can run it
(`ray_ingest` runs it on a Ray cluster). Its result, a `MappedShard`, is one tuple of plain values per file and one
float32 array of all the embeddings, cheap to pickle and to take in; `Ingester.commit_mapped` commits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .catalog_duplicates import StoredSignature
from .decode_pool import decode_entry, signature_of
from .embedders import Embedder
from .errors import ImageDecodeError
from .files import FileEntry
from .images import DecodedImage


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

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> MappedImage:
        row = self.rows[index]
        entry = FileEntry(row.path, row.size, row.mtime_ns)
        if row.error is not None:
            return MappedImage(entry, error=row.error)
        vector = self.vectors[sum(other.error is None for other in self.rows[:index])]
        return MappedImage(entry, row.content_hash, row.width, row.height, vector, None, row.stored_signature())


def map_files(
    entries: list[FileEntry], embedder: Embedder, input_size: int, max_megapixels: float | None = None, batch: int = 32
) -> MappedShard:
    """Decode and embed files, `batch` at a time (a shard's pixels are never all held at once): a pure function
    of the files, for a worker process or a cluster task."""
    rows, vectors = [], [np.zeros((0, embedder.dim), np.float32)]
    for start in range(0, len(entries), batch):
        decoded = [
            (entry, decode_entry(entry.path, input_size, max_megapixels)) for entry in entries[start : start + batch]
        ]
        good = [image for _, image in decoded if isinstance(image, DecodedImage)]
        vectors += [np.asarray(embedder.embed(np.stack([image.pixels for image in good])), np.float32)] if good else []
        rows += [_mapped_row(entry, image) for entry, image in decoded]
    return MappedShard(rows, np.concatenate(vectors))


def _mapped_row(entry: FileEntry, image: DecodedImage | ImageDecodeError) -> MappedRow:
    if not isinstance(image, DecodedImage):
        return MappedRow(entry.path, entry.size, entry.mtime_ns, "", 0, 0, image.reason, None, None, 0)
    signature = signature_of(entry.path, image)
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
