"""The collection: one index folder (catalog + Faiss file + manifest) and everything done to it.

This is the facade the CLI, the server and Python users call. It keeps the
Faiss index in step with the catalog: after an ingest, on open when the file
is stale or damaged (rebuilt from the stored embeddings, never by re-running
the CNN), and on `reindex` to another kind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from . import __version__
from .catalog import SCHEMA_VERSION, Catalog
from .embedders import DEFAULT_EMBEDDER, Embedder, EmbedderSpec, get_embedder_spec, load_embedder
from .errors import CorruptIndexError, EmbedderMismatchError, LookalikeError, NotIndexedError
from .images import decode_bytes, decode_file
from .index import INDEX_FILE, IndexPlan, IndexState, VectorIndex, file_fingerprint, plan_index
from .ingest import Ingester, IngestReport, ProgressCallback, SkipCallback
from .search import QueryResult, hits_from_rows
from .storage import atomic_write_bytes

MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
MAX_K = 10_000
Notice = Callable[[str], None]


@dataclass(frozen=True)
class CollectionInfo:
    """Counts and settings of a collection, as `lookalike info` shows them."""

    folder: str
    images: int
    skipped: int
    tombstones: int
    embedder: str
    dim: int
    metric: str
    index_kind: str
    index_factory: str
    index_vectors: int
    search_params: dict
    bytes_on_disk: dict
    skipped_files: list[tuple[str, str]]

    def to_dict(self) -> dict:
        """JSON-ready form."""
        data = dict(self.__dict__)
        data["skipped_files"] = [{"path": p, "reason": r} for p, r in self.skipped_files]
        return data


class Collection:
    """An index folder opened for searching and updating."""

    # Map the Faiss file read-only when there is nothing to add to it: opens at once, pages shared by processes.
    mmap = True

    def __init__(
        self,
        folder: Path,
        catalog: Catalog,
        device: str = "auto",
        engine: str = "auto",
        on_notice: Notice | None = None,
    ) -> None:
        self.folder = folder
        self.catalog = catalog
        self.device = device
        self.engine = engine
        self.on_notice = on_notice or (lambda message: None)
        self._embedder: Embedder | None = None
        self._index: VectorIndex | None = None
        self._settings: tuple[tuple[int, int], dict, np.ndarray] | None = None
        self._lock_depth = 0

    # --- opening ---------------------------------------------------------------

    @classmethod
    def open(
        cls, folder: str | os.PathLike, device: str = "auto", engine: str = "auto", on_notice: Notice | None = None
    ) -> Collection:
        """Open an existing index folder."""
        folder = Path(folder)
        return cls(folder, Catalog.open(folder), device, engine, on_notice)

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        model: str | None = None,
        metric: str | None = None,
        device: str = "auto",
        engine: str = "auto",
        on_notice: Notice | None = None,
    ) -> Collection:
        """Open an index folder, creating it for `model` if it does not exist yet."""
        folder = Path(folder)
        catalog = Catalog.open(folder, create=True)
        collection = cls(folder, catalog, device, engine, on_notice)
        stored = catalog.get_meta("embedder_name")
        if stored is None:
            spec = get_embedder_spec(model or DEFAULT_EMBEDDER)
            catalog.set_meta(
                {
                    "embedder_name": spec.name,
                    "embedder": spec.identity(),
                    "dim": str(spec.dim),
                    "metric": metric or "cosine",
                    "index_kind": "auto",
                }
            )
        elif model and model != stored:
            raise EmbedderMismatchError(
                f"{folder} was built with {stored}, not {model}: use another --index folder for {model}"
            )
        elif metric and metric != catalog.get_meta("metric"):
            catalog.set_meta({"metric": metric})
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
    def embedder_spec(self) -> EmbedderSpec:
        return get_embedder_spec(self.catalog.get_meta("embedder_name") or DEFAULT_EMBEDDER)

    @property
    def metric(self) -> str:
        return self.catalog.get_meta("metric") or "cosine"

    @property
    def dim(self) -> int:
        return int(self.catalog.get_meta("dim") or self.embedder_spec.dim)

    def embedder(self) -> Embedder:
        """The collection's model, loaded on first use and checked against the stored identity."""
        if self._embedder is None:
            embedder = load_embedder(self.embedder_spec.name, self.device, self.engine)
            stored = self.catalog.get_meta("embedder")
            if stored and stored != embedder.identity:
                raise EmbedderMismatchError(
                    f"{self.folder} was embedded with {stored}, but this install has {embedder.identity}: "
                    "rebuild the index in a new --index folder"
                )
            self._embedder = embedder
        return self._embedder

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
    ) -> IngestReport:
        """Index every image under `root` (only new or changed files are embedded), then update the index."""
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise LookalikeError(f"{root} is not a folder: give the folder of photos to index")
        with self._write_lock():
            if kind:
                plan_index(kind, 0, self.dim, self.metric, options)  # reject bad kinds before any work
            ingester = Ingester(
                self.catalog,
                self.embedder,
                self.embedder_spec.input_size,
                batch_size=batch_size,
                workers=workers,
                on_progress=on_progress,
                on_skip=on_skip,
            )
            report = ingester.run(root)
            if kind:
                settings = {"index_kind": kind, "index_options": json.dumps(options or {})}
                self._rebuild(self._planned(kind, None, options or {}), settings)
            else:
                self._sync_index()
        return report

    def reindex(self, kind: str | None = None, metric: str | None = None, options: dict | None = None) -> IndexPlan:
        """Rebuild the Faiss index from the stored embeddings (no CNN), optionally as another kind.

        The settings change only once the new index is built and saved.
        """
        with self._write_lock():
            if kind and options is None:
                options = {}
            plan = self._planned(kind, metric, options)
            settings = {"index_kind": kind or self.catalog.get_meta("index_kind") or "auto", "metric": plan.metric}
            if options is not None:
                settings["index_options"] = json.dumps(options)
            self._rebuild(plan, settings)
            return plan

    def current_plan(self) -> IndexPlan:
        """The plan the current Faiss file was built from."""
        raw = self.catalog.get_meta("index_plan")
        if raw is None:
            return self._planned()
        return IndexPlan(**json.loads(raw))

    def index(self) -> VectorIndex:
        """The Faiss index, loaded once, verified against the catalog, and rebuilt if stale or damaged."""
        if self._index is None:
            # A reader writes the refreshed index back only when no other process is updating the folder.
            with self._write_lock(required=False) as may_write:
                index = self._sync_index(may_write)
            self._index = (index.on_gpus() if self.device != "cpu" else None) or index
        return self._index

    def _planned(self, kind: str | None = None, metric: str | None = None, options: dict | None = None) -> IndexPlan:
        kind = kind or self.catalog.get_meta("index_kind") or "auto"
        if options is None:
            options = json.loads(self.catalog.get_meta("index_options") or "{}")
        return plan_index(kind, self.catalog.count_embeddings(), self.dim, metric or self.metric, options)

    def _sync_index(self, may_write: bool = True) -> VectorIndex:
        state = self._recorded_state()
        if state is None:
            return self._rebuild(save=may_write)
        pending = next(self.catalog.iter_embeddings(after_id=state.high_water, batch_size=1), None) is not None
        try:
            index = VectorIndex.load(self.folder / INDEX_FILE, state, self.metric, mmap=self.mmap and not pending)
        except CorruptIndexError as error:
            self.on_notice(f"{error}; rebuilding the index from the catalog")
            return self._rebuild(save=may_write)
        if self._should_replan():
            return self._rebuild(save=may_write)
        added = 0
        high_water = state.high_water
        for ids, vectors in self.catalog.iter_embeddings(after_id=state.high_water):
            if index.read_only:  # an ingest committed since the check above: load a writable copy
                index = VectorIndex.load(self.folder / INDEX_FILE, state, self.metric)
            index.add(ids, vectors)
            added += len(ids)
            high_water = int(ids[-1])
        if added and may_write:
            self._save(index, high_water)
        self._index = index
        return index

    def _should_replan(self) -> bool:
        """With kind 'auto', rebuild once the collection has outgrown (or shrunk far below) its plan."""
        if (self.catalog.get_meta("index_kind") or "auto") != "auto":
            return False
        planned, current = self._planned(), self.current_plan()
        if planned.factory == current.factory:
            return False
        trained_for = int(self.catalog.get_meta("index_trained_count") or 0)
        count = self.catalog.count_embeddings()
        return planned.kind != current.kind or count > 2 * trained_for or count < trained_for // 2

    def _rebuild(
        self, plan: IndexPlan | None = None, settings: dict[str, str] | None = None, save: bool = True
    ) -> VectorIndex:
        plan = plan or self._planned()
        if plan.factory != self.current_plan().factory:
            settings = {**(settings or {}), "search_defaults": "{}"}  # tuned knobs belong to the old index
        index = VectorIndex.create(plan, self.dim)
        if not index.is_trained:
            index.train(self.catalog.sample_embeddings(plan.train_size or 10_000))
        high_water = self.catalog.max_image_id()
        for ids, vectors in self.catalog.iter_embeddings():
            index.add(ids, vectors)
        self._index = index
        if save:
            self._save(index, high_water, plan, settings)
            self.catalog.clear_tombstones(high_water)
        return index

    def _save(
        self, index: VectorIndex, high_water: int, plan: IndexPlan | None = None, settings: dict[str, str] | None = None
    ) -> None:
        checksum = index.save(self.folder / INDEX_FILE)
        state = IndexState(checksum, index.count, index.dim, high_water, **file_fingerprint(self.folder / INDEX_FILE))
        values = {"index_state": json.dumps(state.__dict__), **(settings or {})}
        if plan is not None:
            values.update(index_plan=json.dumps(plan.to_dict()), index_trained_count=str(index.count))
        self.catalog.set_meta(values)
        self._write_manifest()

    def _recorded_state(self) -> IndexState | None:
        raw = self.catalog.get_meta("index_state")
        return IndexState(**json.loads(raw)) if raw else None

    def _write_manifest(self) -> None:
        spec = self.embedder_spec
        state = self._recorded_state()
        manifest = {
            "lookalike_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "faiss_version": faiss.__version__,
            "embedder": {
                "id": self.catalog.get_meta("embedder"),
                "name": spec.name,
                "dim": self.dim,
                "preprocessing": spec.preprocessing,
            },
            "metric": self.metric,
            "index": {**self.current_plan().to_dict(), **(state.__dict__ if state else {})},
            "search_defaults": json.loads(self.catalog.get_meta("search_defaults") or "{}"),
        }
        atomic_write_bytes(self.folder / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())

    @contextlib.contextmanager
    def _write_lock(self, required: bool = True) -> Iterator[bool]:
        """Hold the folder's update lock (re-entrant); yields False when another process has it and not `required`."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield True
            finally:
                self._lock_depth -= 1
            return
        with open(self.folder / LOCK_FILE, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if required:
                    raise LookalikeError(
                        f"another lookalike process is updating {self.folder}; wait for it to finish"
                    ) from None
                yield False
                return
            self._lock_depth = 1
            try:
                yield True
            finally:
                self._lock_depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- searching -------------------------------------------------------------

    def search(
        self, queries: Sequence[str | os.PathLike], k: int = 10, nprobe: int | None = None, ef_search: int | None = None
    ) -> list[QueryResult]:
        """Search with image files; files already in the catalog (unchanged) reuse their stored embedding."""
        _check_k(k)
        labels = [os.fspath(q) for q in queries]
        vectors = np.zeros((len(labels), self.dim), dtype=np.float32)
        query_ids: list[int | None] = [None] * len(labels)
        to_embed = []
        for row, label in enumerate(labels):
            image_id, vector = self._stored_vector_for_file(label)
            if vector is None:
                to_embed.append(row)
            else:
                vectors[row], query_ids[row] = vector, image_id
        if to_embed:
            embedder = self.embedder()
            pixels = np.stack([decode_file(labels[row], embedder.input_size).pixels for row in to_embed])
            vectors[to_embed] = embedder.embed(pixels)
        return self.search_vectors(vectors, labels, k, nprobe, ef_search, query_ids)

    def search_image_bytes(
        self, data: bytes, name: str = "upload", k: int = 10, nprobe: int | None = None, ef_search: int | None = None
    ) -> QueryResult:
        """Search with an image given as bytes (an upload)."""
        _check_k(k)
        embedder = self.embedder()
        vector = embedder.embed(decode_bytes(data, name, embedder.input_size).pixels[None])
        return self.search_vectors(vector, [name], k, nprobe, ef_search)[0]

    def search_ids(
        self, ids: Sequence[int], k: int = 10, nprobe: int | None = None, ef_search: int | None = None
    ) -> list[QueryResult]:
        """Search with images already in the collection, by catalog id, without re-embedding."""
        _check_k(k)
        records = self.catalog.images_by_id(ids)
        vectors = []
        for image_id in ids:
            vector = self.catalog.embedding(int(image_id))
            if vector is None:
                raise NotIndexedError(f"no indexed image has id {image_id}: see 'lookalike info' for the ids")
            vectors.append(vector)
        labels = [records[int(i)].path for i in ids]
        return self.search_vectors(np.stack(vectors), labels, k, nprobe, ef_search, [int(i) for i in ids])

    def search_vectors(
        self,
        vectors: np.ndarray,
        labels: Sequence[str],
        k: int = 10,
        nprobe: int | None = None,
        ef_search: int | None = None,
        query_ids: Sequence[int | None] | None = None,
    ) -> list[QueryResult]:
        """Search with embeddings (one row per query) in one batch."""
        _check_k(k)
        index = self.index()
        defaults, tombstones = self._search_settings()
        scores, ids = index.search(
            vectors,
            k,
            nprobe=nprobe or defaults.get("nprobe"),
            ef_search=ef_search or defaults.get("efSearch"),
            exclude=tombstones,
        )
        hits = hits_from_rows(self.catalog, scores, ids)
        query_ids = query_ids or [None] * len(labels)
        return [QueryResult(label, row, query_id) for label, row, query_id in zip(labels, hits, query_ids)]

    def _search_settings(self) -> tuple[dict, np.ndarray]:
        """Stored search defaults and tombstones, re-read only when the catalog changed since the last search."""
        marker = self.catalog.change_marker()
        if self._settings is None or self._settings[0] != marker:
            defaults = json.loads(self.catalog.get_meta("search_defaults") or "{}")
            self._settings = (marker, defaults, self.catalog.tombstones())
        return self._settings[1], self._settings[2]

    def _stored_vector_for_file(self, path: str) -> tuple[int | None, np.ndarray | None]:
        try:
            info = os.stat(path)
        except OSError:
            return None, None
        record = self.catalog.image_by_path(os.path.abspath(path))
        if record is None or record.status != "indexed":
            return None, None
        if record.size != info.st_size or record.mtime_ns != info.st_mtime_ns:
            return None, None
        return record.id, self.catalog.embedding(record.id)

    # --- reporting -------------------------------------------------------------

    def info(self) -> CollectionInfo:
        """Counts, settings and sizes."""
        plan = self.current_plan()
        state = self._recorded_state()
        sizes = {}
        for name in (INDEX_FILE, "catalog.sqlite", "catalog.sqlite-wal", MANIFEST_FILE):
            path = self.folder / name
            if path.exists():
                sizes[name] = path.stat().st_size
        defaults = json.loads(self.catalog.get_meta("search_defaults") or "{}")
        skipped = [(r.path, r.error or "") for r in self.catalog.skipped_images()]
        return CollectionInfo(
            folder=str(self.folder),
            images=self.catalog.count("indexed"),
            skipped=len(skipped),
            tombstones=len(self.catalog.tombstones()),
            embedder=self.catalog.get_meta("embedder") or "",
            dim=self.dim,
            metric=self.metric,
            index_kind=plan.kind,
            index_factory=plan.factory,
            index_vectors=state.count if state else 0,
            search_params=defaults,
            bytes_on_disk=sizes,
            skipped_files=skipped,
        )


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise LookalikeError(f"-k must be between 1 and {MAX_K}, not {k}")
