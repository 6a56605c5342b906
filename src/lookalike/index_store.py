"""The index store: keeps a collection's Faiss file in step with its catalog.

The catalog is the truth and the Faiss file is derived from it. This module loads the file
only after checking it is the one the catalog recorded (`load_verified`), adds the embeddings
committed since it was written, rebuilds it from the stored embeddings when it is missing,
stale or damaged (never by re-running the CNN) or when `auto` has outgrown its plan, and
records each file it writes (checksum, count, dimension, highest id, fingerprint).

A writer (`IndexStore.load`, `rebuild`) saves what it repairs, under the folder's update lock;
a reader (`load_read_only`) never writes: it adds newer embeddings in memory and raises
CorruptIndexError when file and catalog are out of step (a writer between its two steps).

An IVF index can also be kept on disk (`rebuild(on_disk=True)`, see ondisk.py): its inverted lists live in
a data file that search memory-maps, it is always loaded read-only, and later rebuilds keep that form.
Newer embeddings are then merged with the mapped lists into a new data file by a writer, or searched beside
them, in memory, by a reader; the data file is never copied into memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np

from . import ondisk
from .catalog import Catalog
from .errors import CorruptIndexError, IndexSpecError
from .factory_check import check_factory
from .index import INDEX_FILE, METRICS, MMAP_FLAGS, VectorIndex, faiss_reason
from .planner import IndexPlan, plan_index
from .settings import IndexState, Settings, read_settings, store_settings, with_changes, write_manifest
from .sharded_build import LocalShardAdder, ShardAdder, builds_in_shards, merge_in_memory, merge_on_disk
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
        index = _read_if_on_disk(path, expected, mmap) if ondisk.data_files(path.parent) else None
        if index is not None:
            mmap = True  # its lists are a read-only mapping whatever was asked: nothing can be added in place
        elif mmap:
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


def _read_if_on_disk(path: Path, expected: IndexState, mmap: bool) -> faiss.Index | None:
    """The verified on-disk index at `path`, its lists mapped; None when the file holds its lists itself.

    With `mmap`, index.faiss's checksum is skipped when its fingerprint is the recorded one (as `_map_verified`).
    """
    before = file_fingerprint(path)
    trusted = mmap and expected.fingerprint_matches(path)
    data = np.fromfile(path, dtype=np.uint8)
    if file_fingerprint(path) != before:
        raise CorruptIndexError(f"{path} changed while it was being opened")
    if not trusted and hashlib.blake2b(data.data, digest_size=16).hexdigest() != expected.checksum:
        raise CorruptIndexError(f"{path} does not match the checksum the catalog recorded")
    name = ondisk.data_name(data)
    return ondisk.read_verified(path, data, name, trusted) if name else None


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
            # An on-disk index is mapped either way: its newer embeddings go to a new data file, not into this one.
            index = load_verified(
                self.path, state, settings.metric, mmap=self.mmap and (not pending or self.is_on_disk())
            )
        except CorruptIndexError as error:
            self.on_notice(f"{error}; rebuilding the index from the catalog")
            return self.rebuild(save=may_write)
        if self.should_replan():
            return self.rebuild(save=may_write)
        if pending and ondisk.is_on_disk(index):
            return self._add_on_disk(index, state, may_write)
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
        on_disk: bool | None = None,
        **settings_changes: object,
    ) -> VectorIndex:
        """Build the index from the stored embeddings; with `save`, write it and record it (and the changes).

        With `adder`, an IVF kind's vectors are added in shards elsewhere (a cluster) and merged here.
        With `on_disk`, an IVF kind's lists are merged into a data file search maps (IndexSpecError for other
        kinds); None keeps the current index's form (an on-disk index stays so while its kind is IVF).
        """
        plan = plan or self.planned()
        if plan.factory != self.current_plan().factory:
            settings_changes["search_defaults"] = {}  # tuned knobs belong to the old index
        if save and (on_disk or (on_disk is None and self.is_on_disk())):
            built = self._build_on_disk(plan, adder, required=bool(on_disk), changes=settings_changes)
            if built is not None:
                return built
        index, high_water = self.build(plan, adder)
        if save:
            self.save(index, high_water, plan, **settings_changes)
            self.catalog.clear_tombstones(high_water)
        return index

    def is_on_disk(self) -> bool:
        """Whether the current index keeps its lists in a data file (one is in the folder: see ondisk.py)."""
        return bool(ondisk.data_files(self.folder))

    def trained(self, plan: IndexPlan) -> VectorIndex:
        """An empty index for `plan`, trained on a sample of the stored embeddings."""
        dim = read_settings(self.catalog).dim
        # Factory strings Faiss builds but that then fail, or crash the process, on this many vectors.
        check_factory(plan.factory, self.catalog.count_embeddings(), dim, plan.metric, plan.train_size or None)
        index = VectorIndex.create(plan, dim)
        if not index.is_trained:
            index.train(self.catalog.sample_embeddings(plan.train_size or DEFAULT_TRAIN_SIZE))
        return index

    def build(self, plan: IndexPlan, adder: ShardAdder | None = None) -> tuple[VectorIndex, int]:
        """An index for `plan` holding every stored embedding, in memory; and the highest id it covers."""
        index = self.trained(plan)
        high_water = self.catalog.max_image_id()
        if adder is not None and builds_in_shards(index):
            sent = [0]
            shards = merge_in_memory(index, adder, self._shards(adder, sent))
            _check_sent(index.count, sent[0])
            self.on_notice(f"{index.count} vectors added in {shards} shards {adder.where}, merged here")
            return index, high_water
        if adder is not None:
            self.on_notice(f"{plan.factory} is built on this machine: only IVF kinds are built in shards")
        for ids, vectors in self.catalog.iter_embeddings():
            index.add(ids, vectors)
        return index, high_water

    def _build_on_disk(
        self, plan: IndexPlan, adder: ShardAdder | None, required: bool, changes: dict[str, object]
    ) -> VectorIndex | None:
        """Build, save and record an on-disk index for `plan`, and load it mapped; None when `plan` is not IVF."""
        index = self.trained(plan)
        if not builds_in_shards(index):
            if required:
                raise IndexSpecError(f"only IVF kinds can be kept on disk, not {plan.factory}")
            self.on_notice(f"{plan.factory} is kept in memory: only IVF kinds are kept on disk")
            return None
        adder = adder or LocalShardAdder()
        high_water = self.catalog.max_image_id()
        sent = [0]
        shards = self._shards(adder, sent)
        checksum, count, merged = merge_on_disk(
            index, adder, shards, self.path, lambda total: _check_sent(total, sent[0])
        )
        self.on_notice(f"{count} vectors added in {merged} shards {adder.where}, merged on disk here")
        state = self._record(checksum, count, index.dim, high_water, plan, changes, on_disk=True)
        self.catalog.clear_tombstones(high_water)
        return load_verified(self.path, state, plan.metric, mmap=True)

    def _add_on_disk(self, index: VectorIndex, state: IndexState, may_write: bool) -> VectorIndex:
        """The mapped on-disk `index` with the embeddings committed since: merged into a new data file by a
        writer, searched beside the mapped lists (in memory) otherwise."""
        template = ondisk.empty_copy(np.fromfile(self.path, dtype=np.uint8))
        pending = self.catalog.iter_embeddings(after_id=state.high_water)
        if not may_write:
            return ondisk.with_pending(index, template, pending)
        delta, high_water = VectorIndex(faiss.clone_index(template), index.metric), state.high_water
        for ids, vectors in pending:
            delta.add(ids, vectors)
            high_water = int(ids[-1])
        checksum = ondisk.write_on_disk(template, [index.index, delta.index], self.path)
        new_state = self._record(checksum, index.count + delta.count, index.dim, high_water, on_disk=True)
        return load_verified(self.path, new_state, index.metric, mmap=True)

    def save(self, index: VectorIndex, high_water: int, plan: IndexPlan | None = None, **changes: object) -> None:
        """Write the file atomically, then record what it is (and `plan` when it was just built)."""
        if ondisk.is_on_disk(index):
            raise ValueError("an on-disk index is written by write_on_disk, not saved from memory")
        checksum = index.save(self.path)
        self._record(checksum, index.count, index.dim, high_water, plan, changes)

    def _record(
        self,
        checksum: str,
        count: int,
        dim: int,
        high_water: int,
        plan: IndexPlan | None = None,
        changes: dict[str, object] | None = None,
        on_disk: bool = False,
    ) -> IndexState:
        """Record the file just written (and `plan` when it was just built); drop data files it does not name."""
        state = IndexState(checksum, count, dim, high_water, **file_fingerprint(self.path))
        changes = dict(changes or {})
        if plan is not None:
            changes.update(index_plan=plan, index_trained_count=count)
        store_settings(self.catalog, index_state=state, **changes)
        self.write_manifest()
        # An on-disk index.faiss is small (trained layers and list offsets): reading it for its data file is cheap.
        ondisk.remove_unused_data(self.folder, ondisk.data_name(np.fromfile(self.path, np.uint8)) if on_disk else None)
        return state

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
        # An on-disk index opens mapped, by fingerprint, as a writer's does: a reload never reads its data file whole.
        index = load_verified(self.path, state, settings.metric, mmap=self.mmap and self.is_on_disk())
        if file_checksum(self.path) != state.checksum:  # replaced between the check and the read
            raise CorruptIndexError(f"{self.path} was replaced while it was being read")
        pending = self.catalog.iter_embeddings(after_id=state.high_water)
        if ondisk.is_on_disk(index):
            return ondisk.with_pending(index, ondisk.empty_copy(np.fromfile(self.path, dtype=np.uint8)), pending), state
        for ids, vectors in pending:
            index.add(ids, vectors)
        return index, state

    def build_in_memory(self, settings: Settings | None = None) -> tuple[VectorIndex, IndexState | None]:
        """The index the catalog describes, built from the stored embeddings, in memory only; and its state."""
        settings = settings or read_settings(self.catalog)
        index, _ = self.build(settings.index_plan or self.planned())
        return index, settings.index_state

    def _shards(self, adder: ShardAdder, sent: list[int]) -> Iterator[Shard]:
        """The stored embeddings in shards of the adder's size, counting in sent[0] how many vectors went out."""
        return _counted(self.catalog.iter_embeddings(batch_size=adder.shard_vectors), sent)

    def _has_embeddings_after(self, image_id: int) -> bool:
        return next(self.catalog.iter_embeddings(after_id=image_id, batch_size=1), None) is not None


def _check_sent(merged: int, sent: int) -> None:
    """Never save an index that lost a shard on the way."""
    if merged != sent:
        raise CorruptIndexError(f"the merged shards hold {merged} vectors; {sent} were sent")


def _counted(shards: Iterator[Shard], sent: list[int]) -> Iterator[Shard]:
    """The shards, adding up in sent[0] how many vectors went out."""
    for ids, vectors in shards:
        sent[0] += len(ids)
        yield ids, vectors
