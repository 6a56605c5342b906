"""Ingest: scan a folder, decode and embed new or changed files, store them in the catalog.

Three steps, so each can run where it fits best:
- plan: scan the folder and diff it against the catalog (the scan queue holds what to process);
  unchanged files (same path, size and mtime) are not read at all; with a mapper (a cluster), files are
  sent as the scan finds them, so the cluster does not wait for the whole folder to be scanned;
- map: a pure function of a file, `map_step.map_files` (decode, hash, embed), that a thread, a process or
  a cluster task can run; locally, files are decoded, hashed and signed in worker threads or
  processes (`decode_pool`) while the model runs on the previous batch;
- commit: catalog writes, one transaction per batch as soon as it is embedded, so an interrupted
  run keeps everything it finished and the next run resumes where it stopped. A moved or copied
  file (same content hash as an indexed one) reuses the stored embedding instead.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from .catalog import Catalog, NewImage
from .catalog_duplicates import StoredSignature
from .decode_pool import DEFAULT_DECODE, DecodedFile, check_mode, decode_files
from .decode_pool import header_facts as header_facts  # re-exported: part of the map step's public pieces
from .embedders import Embedder
from .embedding_shards import remove_file, shard_folder
from .errors import ImageDecodeError, StorageError
from .files import FileEntry, scan_images
from .images import DecodedImage, default_max_megapixels
from .map_step import MappedImage as MappedImage  # the map step's pieces, re-exported where they used to live
from .map_step import MappedRow, MappedShard
from .map_step import map_files as map_files
from .scan_queue import ScanQueue
from .torch_pipeline import Pending

SCAN_CHUNK = 1000


@dataclass
class IngestReport:
    """What one ingest run did."""

    scanned: int = 0
    unchanged: int = 0
    embedded: int = 0
    reused: int = 0  # copies: a new row sharing an indexed file's stored embedding
    moved: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def added(self) -> int:
        return self.embedded + self.reused

    def summary(self) -> str:
        """One line for people."""
        rate = f", {self.embedded / self.seconds:.1f} images/s" if self.embedded and self.seconds else ""
        return (
            f"{self.scanned} files scanned: {self.embedded} embedded, {self.reused} copies reused, "
            f"{self.moved} moved, {self.unchanged} unchanged, {self.removed} removed, "
            f"{len(self.skipped)} skipped ({self.seconds:.1f} s{rate})"
        )


@dataclass
class _Pending:
    entry: FileEntry
    decoded: DecodedFile


ProgressCallback = Callable[[int, int], None]
SkipCallback = Callable[[str, str], None]
# Another place to run the map step (a cluster): given the files to process (as the scan finds them) and how many
# the scan had found when it started (at least one; more follow), yields the map step's results in groups, in any
# order, as they arrive; each group is committed before the next is asked for. It reads all the files it is given.
Mapper = Callable[[Iterator[FileEntry], int], Iterator[MappedShard]]


class Ingester:
    """Brings the catalog up to date with a folder."""

    def __init__(
        self,
        catalog: Catalog,
        load_embedder: Callable[[], Embedder],
        input_size: int,
        batch_size: int = 32,
        workers: int | None = None,
        on_progress: ProgressCallback | None = None,
        on_skip: SkipCallback | None = None,
        max_megapixels: float | None = None,
        mapper: Mapper | None = None,
        decode_in: str = DEFAULT_DECODE,
    ) -> None:
        check_mode(decode_in)
        self.catalog = catalog
        self.decode_in = decode_in  # "threads" or "processes" (decode_pool)
        self.mapper = mapper
        self.load_embedder = load_embedder
        self.input_size = input_size
        self.batch_size = batch_size
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        # Every decoding worker may hold an image at once: each gets its share of the memory available.
        self.max_megapixels = max_megapixels or default_max_megapixels(concurrency=self.workers)
        self.on_progress = on_progress or (lambda done, total: None)
        self.on_skip = on_skip or (lambda path, reason: None)
        self.report = IngestReport()
        self.queue = ScanQueue(catalog)
        self._embedder: Embedder | None = None
        self._in_flight: tuple[list[_Pending], Pending] | None = None  # submitted to the model, not yet committed

    def run(self, root: str) -> IngestReport:
        """Scan `root` and bring the catalog up to date; KeyboardInterrupt keeps committed work."""
        started = time.perf_counter()
        root = os.path.abspath(root)
        try:
            if self.mapper is not None:
                self._map_while_scanning(root, self.mapper)
            else:
                self.plan(root)
                self._process()
            self.report.removed = self.catalog.remove_images(r.id for r in self.queue.unseen_under(root))
        except KeyboardInterrupt:
            self.report.interrupted = True
            raise
        finally:
            self.report.seconds = time.perf_counter() - started
        return self.report

    # --- plan: scan and diff ---------------------------------------------------------

    def plan(self, root: str) -> int:
        """Record every file seen, and queue the new or changed ones; return how many are queued."""
        for _ in self._scanned(root):
            pass
        return self.queue.todo_count()

    def _scanned(self, root: str, queue: bool = True) -> Iterator[list[FileEntry]]:
        """Scan and diff `root` SCAN_CHUNK files at a time, yielding each chunk's files to process (kept in the
        scan queue too, with `queue`); files that cannot be listed are skipped at the end."""
        self.queue.begin(root)
        chunk: list[FileEntry] = []
        scan_errors: list[tuple[str, str]] = []
        for entry in scan_images(root, on_error=lambda path, reason: scan_errors.append((path, reason))):
            chunk.append(entry)
            if len(chunk) >= SCAN_CHUNK:
                yield self._diff(chunk, queue)
                chunk = []
        yield self._diff(chunk, queue)
        self.queue.record([path for path, _ in scan_errors])
        for path, reason in scan_errors:
            self._skip(FileEntry(path, 0, 0), reason)

    def _diff(self, entries: list[FileEntry], queue: bool = True) -> list[FileEntry]:
        """Record `entries` as seen and return the new or changed ones, queued too with `queue` (their rows
        looked up together)."""
        self.report.scanned += len(entries)
        # In a folder the catalog held nothing under when the scan began, no file can have a row yet.
        known = {} if self.queue.new_folder else self.catalog.images_by_paths(entry.path for entry in entries)
        todo: list[FileEntry] = []
        for entry in entries:
            record = known.get(entry.path)
            if record and record.size == entry.size and record.mtime_ns == entry.mtime_ns:
                self.report.unchanged += 1
                if record.status == "skipped":
                    self.report.skipped.append((record.path, record.error or "skipped"))
            else:
                todo.append(entry)
        queued = [(entry.path, entry.size, entry.mtime_ns) for entry in todo] if queue else []
        self.queue.record([entry.path for entry in entries], queued)
        return todo

    # --- map (decode, embed) and commit ----------------------------------------------

    def _map_while_scanning(self, root: str, mapper: Mapper) -> None:
        """Send files to the mapper (a cluster) as the scan finds them, so the cluster works while the rest of the
        folder is scanned; a scan that finds nothing to do never reaches the cluster. The progress total is what
        the scan has queued so far. (A stored file counts as moved only once it is gone from disk, `_gone`, so a
        commit never takes a row whose file the scan has not reached yet.)"""
        queued = 0

        def todo() -> Iterator[FileEntry]:
            nonlocal queued
            for files in self._scanned(root, queue=False):
                queued += len(files)
                yield from files

        pending = todo()
        first = next(pending, None)
        if first is None:
            return
        done = 0
        self.on_progress(0, queued)
        for group in mapper(itertools.chain([first], pending), queued):
            self.commit_mapped(group)
            done += len(group)
            self.on_progress(done, queued)
        for _ in pending:  # a mapper that stopped reading early: finish the scan (the rest waits for the next run)
            pass

    def _process(self) -> None:
        total = self.queue.todo_count()
        batch: list[_Pending] = []
        self.on_progress(0, total)
        todo = (FileEntry(path, size, mtime) for path, size, mtime in self.queue.iter_todo())
        if total == 0:  # nothing new or changed: a re-run never loads the model
            return
        # The model is loaded before decoding starts: on a GPU it may decode the JPEGs itself (nvJPEG), and it
        # sets the batch size (256 on CUDA, where small batches leave the device idle).
        embedder = self._loaded_embedder()
        batch_size = max(self.batch_size, embedder.forward_batch) if embedder.device == "cuda" else self.batch_size
        decoded = decode_files(
            todo,
            total,
            self.input_size,
            self.max_megapixels,
            self.workers,
            self.decode_in,
            decoder=embedder.file_decoder(),
        )
        for done, (entry, outcome) in enumerate(decoded, 1):
            if isinstance(outcome, ImageDecodeError):
                self._skip(entry, outcome.reason)
            elif not self._reuse_stored(
                entry,
                outcome.image.content_hash,
                (outcome.image.width, outcome.image.height),
                partial(_given, outcome.signature),
            ):
                batch.append(_Pending(entry, outcome))
                if len(batch) >= batch_size:
                    self._embed_and_store(batch)
                    batch = []
            self.on_progress(done, total)
        self._embed_and_store(batch)
        self._embed_and_store([])  # the batch still in flight

    def commit_mapped(self, shard: MappedShard) -> None:
        """Commit results of the map step run elsewhere, as a local run commits its own, in one transaction.

        Skipped files are recorded with their reason; moved, copied or touched files keep or reuse the stored
        embedding (the one computed elsewhere is dropped); the others are added. The shard's embeddings are
        written as one file beside the catalog, with their signatures, before the transaction, which records where
        each added image's vector and signature live in it (embedding_shards.py): a crash in between leaves only a
        file nothing refers to.
        """
        # Only a file whose content is indexed already can be a move or a copy: one query finds them for the shard.
        # (A shard's own new files are added at its end, so none of them is indexed while the shard is gone through.)
        known = self.catalog.indexed_hashes(row.content_hash for row in shard.rows if row.error is None)
        file = self._shard_file(shard)
        fresh: list[tuple[int, MappedRow]] = []  # (row of the shard file, facts)
        number = 0
        with self.catalog.transaction():
            for row in shard.rows:
                if row.error is not None:
                    self._skip(FileEntry(row.path, row.size, row.mtime_ns), row.error)
                    continue
                number += 1
                if row.content_hash in known and self._reuse_stored(
                    FileEntry(row.path, row.size, row.mtime_ns),
                    row.content_hash,
                    (row.width, row.height),
                    partial(_given, row.stored_signature()),
                ):
                    continue
                fresh.append((number - 1, row))
            if fresh and file is not None:
                self.catalog.add_indexed(self._located(fresh, shard, file))
        if file is not None and not fresh:  # every file was a skip, move or copy: the file holds nothing needed
            remove_file(self.catalog.path.parent, file)
        self.report.embedded += len(fresh)

    def _shard_file(self, shard: MappedShard) -> str | None:
        """The name of the file holding the shard's vectors and signatures: the one its worker wrote into the
        collection, or one written here now. None if the shard has no vector."""
        collection = self.catalog.path.parent
        if shard.file is None:
            return shard.write_file(collection) if len(shard.vectors) else None
        if not (shard_folder(collection) / shard.file).is_file():
            raise StorageError(
                f"a worker wrote the shard file {shard.file} into {shard_folder(collection)}, but it is not there "
                "for this process: every node must see the collection's folder as this one does"
            )
        return shard.file

    def _located(self, fresh: list[tuple[int, MappedRow]], shard: MappedShard, file: str) -> list[NewImage]:
        """The new images of a shard, each pointing at its row of the shard file just registered."""
        shard_id = self.catalog.register_shard(file, shard.rows_in_file, shard.dim)
        return [
            NewImage(
                row.path,
                row.size,
                row.mtime_ns,
                row.content_hash,
                row.width,
                row.height,
                None,  # the shard file holds the vector and the signature
                None,
                (shard_id, number, shard.checksum(number)),
            )
            for number, row in fresh
        ]

    def _reuse_stored(
        self,
        entry: FileEntry,
        content_hash: str,
        size: tuple[int, int],
        signature: Callable[[], StoredSignature | None],
    ) -> bool:
        """Handle a file whose content is already indexed: moved, copied, or only touched."""
        matches = self.catalog.indexed_with_hash(content_hash)
        if not matches:
            return False
        same_place = next((m for m in matches if m.path == entry.path), None)
        moved_from = same_place or next((m for m in matches if self._gone(m.path)), None)
        if moved_from is not None:
            self.catalog.move_image(moved_from.id, entry.path, entry.size, entry.mtime_ns)
            if same_place is None:
                self.report.moved += 1
            else:
                self.report.unchanged += 1
            return True
        vector = self.catalog.embedding(matches[0].id)
        if vector is None:
            return False
        # A byte copy has the same pixels: its signature is the stored one (or new, if the collection predates them).
        stored = self.catalog.signatures([matches[0].id]).get(matches[0].id) or signature()
        self.catalog.add_indexed(
            [NewImage(entry.path, entry.size, entry.mtime_ns, content_hash, size[0], size[1], vector, stored)]
        )
        self.report.reused += 1
        return True

    def _gone(self, path: str) -> bool:
        """True when a stored file has left its place: not seen by this scan and not on disk. (A file of another
        folder of the collection is never seen by this scan: it has moved only if it is gone from disk.)"""
        return not self.queue.was_seen(path) and not os.path.lexists(path)

    def _loaded_embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.load_embedder()
        return self._embedder

    def _embed_and_store(self, batch: list[_Pending]) -> None:
        """Start embedding `batch`, then commit the batch before it: on a GPU the device computes one batch while
        this thread commits the last and gathers the next (an interrupted run loses at most the batch in flight).
        A batch computed on the spot (the CPU) is committed at once."""
        previous, self._in_flight = self._in_flight, None
        if batch:
            pixels = np.stack([item.decoded.image.pixels for item in batch])
            self._in_flight = (batch, self._loaded_embedder().submit(pixels))
        if previous is not None:
            self._store(*previous)
        if self._in_flight is not None and not self._in_flight[1].on_device:  # computed already: commit it now
            self._store(*self._in_flight)
            self._in_flight = None

    def _store(self, batch: list[_Pending], pending: Pending) -> None:
        vectors = pending.result()
        self.catalog.add_indexed(
            [
                _new_image(item.entry, item.decoded.image, vector, item.decoded.signature)
                for item, vector in zip(batch, vectors)
            ]
        )
        self.report.embedded += len(batch)

    def _skip(self, entry: FileEntry, reason: str) -> None:
        self.catalog.add_skipped(entry.path, entry.size, entry.mtime_ns, reason)
        self.report.skipped.append((entry.path, reason))
        self.on_skip(entry.path, reason)


def _new_image(
    entry: FileEntry, decoded: DecodedImage, vector: np.ndarray, signature: StoredSignature | None
) -> NewImage:
    return NewImage(
        entry.path, entry.size, entry.mtime_ns, decoded.content_hash, decoded.width, decoded.height, vector, signature
    )


def _given(signature: StoredSignature | None) -> StoredSignature | None:
    return signature
