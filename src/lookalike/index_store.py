"""The index store: keeps a collection's Faiss file in step with its catalog.

The catalog is the truth and the Faiss file is derived from it. This module loads the file
only after checking it is the one the catalog recorded (`load_verified`), adds the embeddings
committed since it was written, rebuilds it from the stored embeddings when it is missing,
stale or damaged (never by re-running the CNN) or when `auto` has outgrown its plan, and
records each file it writes (checksum, count, dimension, highest id, fingerprint).

A writer (`IndexStore.load`, `rebuild`) saves what it repairs, under the folder's update lock;
a reader (`load_read_only`) never writes: it adds newer embeddings in memory and raises
CorruptIndexError when file and catalog are out of step (a writer between its two steps).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np

from .catalog import Catalog
from .errors import CorruptIndexError, IndexSpecError
from .factory_check import check_factory
from .index import INDEX_FILE, METRICS, MMAP_FLAGS, VectorIndex, faiss_reason
from .planner import IndexPlan, plan_index
from .settings import IndexState, Settings, read_settings, store_settings, with_changes, write_manifest
from .sharded_build import ShardAdder, builds_in_shards
from .storage import file_checksum, file_fingerprint

Notice = Callable[[str], None]
Shard = tuple[np.ndarray, np.ndarray]  # (ids, vectors)
DEFAULT_TRAIN_SIZE = 10_000


def load_verified(path: Path, expected: IndexState, metric: str, mmap: bool = False) -> VectorIndex:
    """Read a Faiss file after checking it is the one the catalog recorded.

    faiss.read_index is not a validator: a damaged file can load silently
    wrong or ask for absurd amounts of memory, so the checksum is verified first.

    With `mmap`, the file is mapped read-only instead of read (Faiss >= 1.11 maps Flat, HNSW and IVF
    data in place; older ones only IVF lists): it opens at once whatever its size and the page cache
    is shared by every process that maps it. So that a multi-GB file still opens instantly, the full
    checksum is skipped when the file's fingerprint (inode, size, mtime, ctime; see file_fingerprint)
    is the one recorded right after that checksum was computed, i.e. when it is provably the same
    file, untouched since. Any write, truncation, replacement or copy changes the fingerprint and
    brings back the full check. What this gives up: corruption that changes no metadata (a failing
    disk flipping bits) is not caught at open; a normal load still checks every byte.
    """
    if metric not in METRICS:
        raise IndexSpecError(f"unknown metric {metric!r}; choose cosine or l2")
    if not path.is_file():
        raise CorruptIndexError(f"{path} is missing")
    try:
        if mmap:
            index = _map_verified(path, expected)
        else:
            # Checked and parsed from the same bytes, so a file replaced meanwhile is never loaded unverified.
            data = np.fromfile(path, dtype=np.uint8)
            if hashlib.blake2b(data.data, digest_size=16).hexdigest() != expected.checksum:
                raise CorruptIndexError(f"{path} does not match the checksum the catalog recorded")
            index = faiss.deserialize_index(data)
    except (RuntimeError, MemoryError) as error:  # MemoryError: Faiss's std::bad_alloc
        raise CorruptIndexError(f"{path} cannot be read by Faiss: {faiss_reason(error)}") from None
    if index.ntotal != expected.count or index.d != expected.dim:
        raise CorruptIndexError(
            f"{path} holds {index.ntotal} vectors of dim {index.d}; "
            f"the catalog expected {expected.count} of dim {expected.dim}"
        )
    if index.metric_type != METRICS[metric]:
        # Scores would come out as cosines of the wrong formula (1 - ip/2, or raw L2 distances).
        built_for = next(name for name, value in METRICS.items() if value == index.metric_type)
        raise CorruptIndexError(f"{path} was built for the {built_for} metric, not {metric}")
    return VectorIndex(index, metric, read_only=mmap)


def _map_verified(path: Path, expected: IndexState) -> faiss.Index:
    """Memory-map the file, having verified it (by fingerprint, else by checksum) and that it did not change since."""
    before = file_fingerprint(path)
    if not expected.fingerprint_matches(path) and file_checksum(path) != expected.checksum:
        raise CorruptIndexError(f"{path} does not match the checksum the catalog recorded")
    index = faiss.read_index(str(path), MMAP_FLAGS)
    if file_fingerprint(path) != before:
        raise CorruptIndexError(f"{path} changed while it was being opened")
    return index


class IndexStore:
    """The Faiss file of one collection folder, kept in step with its catalog."""

    # Map the Faiss file read-only when there is nothing to add to it: opens at once, pages shared by processes.
    mmap = True

    def __init__(self, folder: Path, catalog: Catalog, on_notice: Notice | None = None) -> None:
        self.folder = folder
        self.catalog = catalog
        self.on_notice = on_notice or (lambda message: None)

    @property
    def path(self) -> Path:
        return self.folder / INDEX_FILE

    # --- planning ----------------------------------------------------------------------

    def planned(self, kind: str | None = None, metric: str | None = None, options: dict | None = None) -> IndexPlan:
        """The plan for the collection as it is now (its stored kind and options unless given)."""
        settings = read_settings(self.catalog)
        kind = kind or settings.index_kind
        options = settings.index_options if options is None else options
        return plan_index(kind, self.catalog.count_embeddings(), settings.dim, metric or settings.metric, options)

    def current_plan(self) -> IndexPlan:
        """The plan the current Faiss file was built from (what would be built, before the first build)."""
        return read_settings(self.catalog).index_plan or self.planned()

    def should_replan(self) -> bool:
        """With kind 'auto', rebuild once the collection has outgrown (or shrunk far below) its plan."""
        settings = read_settings(self.catalog)
        if settings.index_kind != "auto":
            return False
        planned, current = self.planned(), self.current_plan()
        if planned.factory == current.factory:
            return False
        trained_for = settings.index_trained_count
        count = self.catalog.count_embeddings()
        return planned.kind != current.kind or count > 2 * trained_for or count < trained_for // 2

    # --- writers (call under the folder's update lock) --------------------------------------

    def load(self, may_write: bool = True) -> VectorIndex:
        """The verified index with every committed embedding; rebuilt when missing, stale, damaged or outgrown."""
        settings = read_settings(self.catalog)
        state = settings.index_state
        if state is None:
            return self.rebuild(save=may_write)
        pending = self._has_embeddings_after(state.high_water)
        try:
            index = load_verified(self.path, state, settings.metric, mmap=self.mmap and not pending)
        except CorruptIndexError as error:
            self.on_notice(f"{error}; rebuilding the index from the catalog")
            return self.rebuild(save=may_write)
        if self.should_replan():
            return self.rebuild(save=may_write)
        added, high_water = 0, state.high_water
        for ids, vectors in self.catalog.iter_embeddings(after_id=state.high_water):
            if index.read_only:  # an ingest committed since the check above: load a writable copy
                index = load_verified(self.path, state, settings.metric)
            index.add(ids, vectors)
            added += len(ids)
            high_water = int(ids[-1])
        if added and may_write:
            self.save(index, high_water)
        return index

    def rebuild(
        self,
        plan: IndexPlan | None = None,
        save: bool = True,
        adder: ShardAdder | None = None,
        **settings_changes: object,
    ) -> VectorIndex:
        """Build the index from the stored embeddings; with `save`, write it and record it (and the changes).

        With `adder`, an IVF kind's vectors are added in shards elsewhere (a cluster) and merged here.
        """
        plan = plan or self.planned()
        if plan.factory != self.current_plan().factory:
            settings_changes["search_defaults"] = {}  # tuned knobs belong to the old index
        index, high_water = self.build(plan, adder)
        if save:
            self.save(index, high_water, plan, **settings_changes)
            self.catalog.clear_tombstones(high_water)
        return index

    def build(self, plan: IndexPlan, adder: ShardAdder | None = None) -> tuple[VectorIndex, int]:
        """An index for `plan` holding every stored embedding, in memory; and the highest id it covers."""
        dim = read_settings(self.catalog).dim
        # Factory strings Faiss builds but that then fail, or crash the process, on this many vectors.
        check_factory(plan.factory, self.catalog.count_embeddings(), dim, plan.metric, plan.train_size or None)
        index = VectorIndex.create(plan, dim)
        if not index.is_trained:
            index.train(self.catalog.sample_embeddings(plan.train_size or DEFAULT_TRAIN_SIZE))
        high_water = self.catalog.max_image_id()
        if adder is not None and builds_in_shards(index):
            sent = [0]
            shards = adder(index, _counted(self.catalog.iter_embeddings(batch_size=adder.shard_vectors), sent))
            if index.count != sent[0]:  # never save an index that lost a shard on the way
                raise CorruptIndexError(f"the merged shards hold {index.count} vectors; {sent[0]} were sent")
            self.on_notice(f"{index.count} vectors added in {shards} shards {adder.where}, merged here")
            return index, high_water
        if adder is not None:
            self.on_notice(f"{plan.factory} is built on this machine: only IVF kinds are built in shards")
        for ids, vectors in self.catalog.iter_embeddings():
            index.add(ids, vectors)
        return index, high_water

    def save(self, index: VectorIndex, high_water: int, plan: IndexPlan | None = None, **changes: object) -> None:
        """Write the file atomically, then record what it is (and `plan` when it was just built)."""
        checksum = index.save(self.path)
        state = IndexState(checksum, index.count, index.dim, high_water, **file_fingerprint(self.path))
        if plan is not None:
            changes.update(index_plan=plan, index_trained_count=index.count)
        store_settings(self.catalog, index_state=state, **changes)
        self.write_manifest()

    def write_manifest(self) -> None:
        """Rewrite manifest.json from the stored settings."""
        from .embedders import get_embedder_spec

        settings = read_settings(self.catalog)
        preprocessing = get_embedder_spec(settings.embedder_name).preprocessing if settings.embedder_name else ""
        write_manifest(self.folder, with_changes(settings, index_plan=self.current_plan()), preprocessing)

    # --- readers (never write) --------------------------------------------------------------

    def load_read_only(self) -> tuple[VectorIndex, IndexState | None]:
        """The recorded file plus, in memory, the embeddings committed since; and the state it matches.

        CorruptIndexError when the file is not the one recorded (replaced meanwhile, or damaged).
        With no file recorded yet, the index is built in memory.
        """
        settings = read_settings(self.catalog)
        state = settings.index_state
        if state is None:
            return self.build_in_memory(settings)
        index = load_verified(self.path, state, settings.metric)
        if file_checksum(self.path) != state.checksum:  # replaced between the check and the read
            raise CorruptIndexError(f"{self.path} was replaced while it was being read")
        for ids, vectors in self.catalog.iter_embeddings(after_id=state.high_water):
            index.add(ids, vectors)
        return index, state

    def build_in_memory(self, settings: Settings | None = None) -> tuple[VectorIndex, IndexState | None]:
        """The index the catalog describes, built from the stored embeddings, in memory only; and its state."""
        settings = settings or read_settings(self.catalog)
        index, _ = self.build(settings.index_plan or self.planned())
        return index, settings.index_state

    def _has_embeddings_after(self, image_id: int) -> bool:
        return next(self.catalog.iter_embeddings(after_id=image_id, batch_size=1), None) is not None


def _counted(shards: Iterator[Shard], sent: list[int]) -> Iterator[Shard]:
    """The shards, adding up in sent[0] how many vectors went out."""
    for ids, vectors in shards:
        sent[0] += len(ids)
        yield ids, vectors
