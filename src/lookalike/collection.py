"""The collection: one folder (catalog + Faiss file + manifest) and everything done to it.

This is the facade the CLI, the server and Python users call. Updating (ingest,
reindex, tune) happens under the folder's update lock; the index store keeps the
Faiss file in step with the catalog. A collection opened `read_only` never writes
to its folder, so it can serve while another process updates it: `refresh()`
picks up what that process committed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .catalog import Catalog, ImageRecord
from .collection_duplicates import DuplicateFinding
from .collection_search import Searching
from .decode_pool import DEFAULT_DECODE
from .embedders import DEFAULT_EMBEDDER, Embedder, EmbedderSpec, get_embedder_spec, load_embedder
from .errors import BusyError, EmbedderMismatchError, InvalidArgumentError, NotIndexedError
from .index import VectorIndex
from .index_store import IndexStore, Notice
from .info import CollectionInfo, describe
from .ingest import Ingester, IngestReport, Mapper, ProgressCallback, SkipCallback
from .planner import IndexPlan, plan_index
from .rerank import rerank_factor
from .search import (
    MAX_K,
    Stage,
    check_ids,
)
from .settings import IndexState, Settings, read_settings, store_settings
from .storage import FolderLock

if TYPE_CHECKING:
    from .sharded_build import ShardAdder
    from .tune import TuneResult


class Collection(Searching, DuplicateFinding):
    """A collection folder opened for searching and (unless read-only) updating."""

    def __init__(
        self,
        folder: Path,
        catalog: Catalog,
        device: str = "auto",
        engine: str = "auto",
        on_notice: Notice | None = None,
        read_only: bool = False,
    ) -> None:
        self.folder = folder
        self.catalog = catalog
        self.device = device
        self.engine = engine
        self.read_only = read_only
        self.on_notice = on_notice or (lambda message: None)
        self.store = IndexStore(folder, catalog, self.on_notice)
        self._lock = FolderLock(folder)
        self._embedder: Embedder | None = None
        self._index: VectorIndex | None = None
        self._index_state: IndexState | None = None  # what a read-only collection's index was loaded from
        self._search_cache: tuple[tuple[int, int], dict, np.ndarray] | None = None
        self.stages: list[Stage] = []  # run on each query's hits after the index (see search.py)
        # The largest image decoded, in megapixels (default: what the memory available allows; see images.py).
        self.max_megapixels: float | None = None

    # --- opening ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike,
        device: str = "auto",
        engine: str = "auto",
        on_notice: Notice | None = None,
        read_only: bool = False,
    ) -> Collection:
        """Open an existing collection folder (CollectionNotFoundError when there is none)."""
        folder = Path(folder)
        return cls(folder, Catalog.open(folder), device, engine, on_notice, read_only)

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        embedder: str | None = None,
        metric: str | None = None,
        device: str = "auto",
        engine: str = "auto",
        on_notice: Notice | None = None,
        model: str | None = None,
    ) -> Collection:
        """Open a collection folder, creating it for `embedder` if it does not exist yet.

        `model` is the earlier name of `embedder`.
        """
        folder = Path(folder)
        name = embedder or model
        catalog = Catalog.open(folder, create=True)
        collection = cls(folder, catalog, device, engine, on_notice)
        settings = read_settings(catalog)
        if not settings.created:
            spec = get_embedder_spec(name or DEFAULT_EMBEDDER)
            if metric is not None:
                plan_index("flat", 0, spec.dim, metric)  # rejects an unknown metric before anything is stored
            store_settings(
                catalog,
                embedder_name=spec.name,
                embedder_id=spec.identity(),
                dim=spec.dim,
                metric=metric or "cosine",
                index_kind="auto",
            )
        elif name and name != settings.embedder_name:
            raise EmbedderMismatchError(
                f"{folder} was built with {settings.embedder_name}, not {name}: "
                f"a collection for {name} needs a folder of its own",
                "embedder",
            )
        elif metric and metric != settings.metric:
            store_settings(catalog, metric=metric)
        return collection

    def close(self) -> None:
        """Release the catalog connection."""
        self.catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- settings --------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """Everything the collection stores about itself (read from the catalog)."""
        return read_settings(self.catalog)

    @property
    def embedder_spec(self) -> EmbedderSpec:
        return get_embedder_spec(self.settings.embedder_name or DEFAULT_EMBEDDER)

    @property
    def metric(self) -> str:
        return self.settings.metric

    @property
    def dim(self) -> int:
        return self.settings.dim or self.embedder_spec.dim

    def embedder(self) -> Embedder:
        """The collection's embedder, loaded on first use and checked against the stored identity."""
        if self._embedder is None:
            embedder = load_embedder(self.embedder_spec.name, self.device, self.engine)
            stored = self.settings.embedder_id
            if stored and stored != embedder.identity:
                raise EmbedderMismatchError(
                    f"{self.folder} was embedded with {stored}, but this install has {embedder.identity}: "
                    "build the collection again in a new folder"
                )
            self._embedder = embedder
        return self._embedder

    def use_embedder(self, embedder: Embedder) -> None:
        """Embed with `embedder`, loaded elsewhere for this same collection (readers sharing one model)."""
        self._embedder = embedder

    def current_plan(self) -> IndexPlan:
        """The plan the current Faiss file was built from."""
        return self.store.current_plan()

    # --- updating --------------------------------------------------------------

    def add_folder(
        self,
        root: str | os.PathLike,
        kind: str | None = None,
        options: dict | None = None,
        on_progress: ProgressCallback | None = None,
        on_skip: SkipCallback | None = None,
        workers: int | None = None,
        batch_size: int = 32,
        ray_address: str | None = None,
        decode_in: str = DEFAULT_DECODE,
        shard_size: int | None = None,
    ) -> IngestReport:
        """Index every image under `root` (only new or changed files are embedded), then update the index.

        With `ray_address` (what `ray.init` takes: "auto", "HOST:PORT", "ray://HOST:PORT"), the files are decoded
        and embedded on that Ray cluster in shards of `shard_size` files (default 256; 1,024 on CUDA),
        `batch_size` per model run; every node must read `root` under the same path (`ray_ingest.py`).
        `decode_in`: "threads" or "processes", where files are decoded (`decode_pool`).
        """
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise InvalidArgumentError(f"{root} is not a folder of images", "root")
        self._check_writable()
        with self._lock.hold():
            if kind:
                plan_index(kind, 0, self.dim, self.metric, options)  # reject bad kinds before any work
            self.catalog.remove_shard_files(self.catalog.unregistered_shard_files())  # a killed driver's leftovers
            ingester = Ingester(
                self.catalog,
                self.embedder,
                self.embedder_spec.input_size,
                batch_size=batch_size,
                workers=workers,
                on_progress=on_progress,
                on_skip=on_skip,
                max_megapixels=self.max_megapixels,
                mapper=self._ray_mapper(ray_address, shard_size, batch_size) if ray_address else None,
                decode_in=decode_in,
            )
            report = ingester.run(root)
            self._remember_root(os.path.abspath(root))
            if kind:
                plan = self.store.planned(kind, None, options or {})
                self._index = self.store.rebuild(plan, index_kind=kind, index_options=options or {})
            else:
                self._index = self.store.load()
        return report

    def _ray_mapper(self, address: str, shard_size: int | None, batch_size: int) -> Mapper:
        from .ray_ingest import RayMapper

        spec = self.embedder_spec
        return RayMapper(
            address,
            spec.name,
            self.settings.embedder_id or spec.identity(),
            spec.input_size,
            self.device,
            self.engine,
            self.max_megapixels,
            shard_size,
            batch_size,
            self.folder,
        )

    def reindex(
        self,
        kind: str | None = None,
        metric: str | None = None,
        options: dict | None = None,
        ray_address: str | None = None,
        shard_size: int | None = None,
        on_disk: bool | None = None,
    ) -> IndexPlan:
        """Rebuild the Faiss index from the stored embeddings (no CNN), optionally as another kind.

        With `ray_address`, an IVF kind is built on that Ray cluster: trained here, its shards of
        `shard_size` vectors added by the cluster's workers and merged here (`ray_build.py`).
        With `on_disk`, an IVF kind's lists are merged into a data file that search memory-maps, one shard in
        memory at a time (`ondisk.py`); False brings them back into index.faiss; None keeps the current form.
        The settings change only once the new index is built and saved.
        """
        self._check_writable()
        adder: ShardAdder | None = None
        if ray_address is not None:
            from .ray_build import RayShardAdder
            from .sharded_build import SHARD_VECTORS

            adder = RayShardAdder(ray_address, shard_size or SHARD_VECTORS)
        elif on_disk and shard_size:
            from .sharded_build import LocalShardAdder

            adder = LocalShardAdder(shard_size)
        with self._lock.hold():
            if kind and options is None:
                options = {}
            plan = self.store.planned(kind, metric, options)
            self._index = self.store.rebuild(
                plan,
                adder=adder,
                on_disk=on_disk,
                index_kind=kind or self.settings.index_kind,
                metric=plan.metric,
                index_options=options,
            )
            return plan

    def tune(
        self,
        target_recall: float | None = None,
        k: int = 10,
        queries: int | None = None,
        seed: int = 0,
        store: bool = True,
        full: bool = False,
        latency_queries: int | None = None,
    ) -> TuneResult:
        """Measure recall against latency of the index's search knob; with `store`, keep the chosen setting."""
        from . import tune

        index = self.index()
        state_before = self.settings.index_state
        result = tune.measure_collection(
            index,
            self.catalog,
            self.current_plan().factory,
            self.metric,
            target_recall=target_recall,
            k=k,
            queries=queries,
            seed=seed,
            full=full,
            rerank_factor=rerank_factor(self.current_plan().params),
            **({"latency_queries": latency_queries} if latency_queries else {}),
        )
        if store and result.chosen is not None:
            self._check_writable()
            with self._lock.hold():
                if self.settings.index_state != state_before:
                    raise BusyError("the index was rebuilt while tuning ran: tune again")
                store_settings(self.catalog, search_defaults=result.chosen.setting, search_tuning=result.summary())
                self.store.write_manifest()
            result = result.as_stored()
        return result

    def _remember_root(self, root: str) -> None:
        roots = self.settings.scanned_roots
        if root not in roots:
            store_settings(self.catalog, scanned_roots=[*roots, root])

    def _check_writable(self) -> None:
        if self.read_only:
            raise InvalidArgumentError(f"{self.folder} was opened read-only", "read_only")

    # --- the index ----------------------------------------------------------------

    def index(self) -> VectorIndex:
        """The Faiss index, loaded once, verified against the catalog, and rebuilt if stale or damaged.

        A read-only collection loads the recorded file and adds newer embeddings in memory; it raises
        CorruptIndexError while the file and the catalog are out of step, and never writes.
        """
        if self._index is None:
            if self.read_only:
                self._index, self._index_state = self.store.load_read_only()
            else:
                # A reader writes the refreshed index back only when no other process is updating the folder.
                with self._lock.hold(required=False) as may_write:
                    index = self.store.load(may_write)
                self._index = (index.on_gpus() if self.device != "cpu" else None) or index
        return self._index

    @property
    def index_state(self) -> IndexState | None:
        """The recorded state of the Faiss file the loaded index of a read-only collection came from."""
        return self._index_state

    def use_index(self, index: VectorIndex, state: IndexState | None) -> None:
        """Search with `index`, loaded elsewhere for this same collection (readers sharing one index)."""
        self._index, self._index_state = index, state

    def refresh(self) -> bool:
        """Reload the index when another process recorded a new one since it was loaded; True if it did."""
        if self._index is not None and self.settings.index_state == self._index_state:
            return False
        self._index = None
        self.index()
        return True

    # --- images ------------------------------------------------------------------

    def image_file(self, image_id: int) -> ImageRecord:
        """The row of an indexed image whose file is still the one that was indexed (else NotIndexedError)."""
        record = self.catalog.images_by_id(check_ids([image_id])).get(image_id)
        if record is None or record.status != "indexed":
            raise NotIndexedError(f"no indexed image has id {image_id}")
        if not os.path.lexists(record.path):
            raise NotIndexedError(f"the file of image {image_id} is no longer where it was indexed")
        if not record.file_unchanged():
            raise NotIndexedError(f"the file of image {image_id} changed since it was indexed; index it again")
        return record

    # --- reporting -------------------------------------------------------------

    def info(self) -> CollectionInfo:
        """Counts, settings and sizes."""
        return describe(self.folder, self.catalog, self.store)


__all__ = ["MAX_K", "Collection", "CollectionInfo", "ImageRecord"]
