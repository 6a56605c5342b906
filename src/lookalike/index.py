"""The index: a Faiss structure whose ids are catalog ids, derived from the catalog's embeddings.

`VectorIndex` wraps one Faiss index built from a factory string (see planner.py): training,
adding vectors under their catalog ids, k-NN and range search with search-time knobs
(nprobe, efSearch) and tombstone filtering, and reading and writing the file. Scores are
cosine similarities whatever the metric. Checking a file against the catalog before
loading it, and keeping it in step, is the index store's job (index_store.py).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from .errors import IndexSpecError, LookalikeError
from .factory_check import accepts_search_parameters
from .faiss_gpu import ivf_training_on_gpus
from .storage import atomic_write_with, file_checksum

if TYPE_CHECKING:
    from .planner import IndexPlan

INDEX_FILE = "index.faiss"
METRICS = {"cosine": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
DEFAULT_EF_SEARCH = 64
QUANTIZER_EF_SEARCH = 64  # stored in the file: an HNSW quantizer's beam when it picks the nprobe nearest lists
# Read-only mapping: IO_FLAG_MMAP_IFC (Faiss >= 1.11) maps every kind's data in place; IO_FLAG_MMAP only IVF lists.
MMAP_FLAGS = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP) | faiss.IO_FLAG_READ_ONLY


def find_ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF layer inside wrappers (IDMap, PreTransform, Refine), if there is one."""
    index = faiss.downcast_index(index)
    while True:
        if isinstance(index, faiss.IndexIVF):
            return index
        if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        else:
            return None


def find_hnsw(index: faiss.Index) -> faiss.IndexHNSW | None:
    """The HNSW layer inside wrappers, if there is one."""
    index = faiss.downcast_index(index)
    while True:
        if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        else:
            return index if isinstance(index, faiss.IndexHNSW) else None


def below_transforms(index: faiss.Index) -> faiss.Index:
    """The index under any PreTransform layers (PCA, OPQ, ...)."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


class VectorIndex:
    """A Faiss index whose ids are catalog ids, with search-time knobs and tombstone filtering."""

    def __init__(self, index: faiss.Index, metric: str, read_only: bool = False) -> None:
        if metric not in METRICS:
            raise IndexSpecError(f"unknown metric {metric!r}; choose cosine or l2")
        self.index = index
        self.metric = metric
        self._ivf = find_ivf(index)
        self._hnsw = find_hnsw(index)
        self._read_only = read_only  # a read-only file mapping (mmap): searchable, nothing can be added
        self._gpu = False
        # Flat PQ, LSH, NSG, fast-scan and additive-quantizer indexes refuse any SearchParameters: search them
        # with none, and filter tombstones afterwards.
        self._takes_params = accepts_search_parameters(index)
        self._selector_ok = self._takes_params and self._selector_reaches_search()
        # Search parameters per (nprobe, efSearch): built once, not on every query (they cost ~20-60 us).
        self._params_cache: dict[tuple, tuple[object, object, list[object]]] = {}
        self.keep_alive: tuple[object, ...] = ()  # what Faiss structures this index points into must outlive it

    @classmethod
    def create(cls, plan: IndexPlan, dim: int) -> VectorIndex:
        """An empty, untrained index for `plan`."""
        try:
            index = faiss.index_factory(dim, plan.factory, METRICS[plan.metric])
        except Exception as error:  # noqa: BLE001
            raise IndexSpecError(f"Faiss cannot build {plan.factory!r}: {faiss_reason(error)}") from None
        # IVF stores caller ids itself (also under PCA/OPQ transforms); anything else, a Refine
        # over IVF included, has no add_with_ids of its own and takes them through an IDMap.
        if not isinstance(below_transforms(index), (faiss.IndexIVF, faiss.IndexIDMap, faiss.IndexIDMap2)):
            index = faiss.IndexIDMap2(index)
        ivf = find_ivf(index)
        quantizer = faiss.downcast_index(ivf.quantizer) if ivf is not None else None
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efSearch = QUANTIZER_EF_SEARCH  # Faiss's 16 misses some of the nearest lists
        # The factory turns on polysemous training for 8-bit PQ codes: seconds to a minute of training for
        # Hamming filtering that search never uses (polysemous_ht stays 0).
        core = faiss.downcast_index(index)
        while isinstance(core, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            core = faiss.downcast_index(core.index)
        for layer in (ivf, core, getattr(core, "storage", None)):
            if layer is not None and hasattr(faiss.downcast_index(layer), "do_polysemous_training"):
                faiss.downcast_index(layer).do_polysemous_training = False
        hnsw = find_hnsw(index)
        if hnsw is not None and "efConstruction" in plan.params:
            hnsw.hnsw.efConstruction = plan.params["efConstruction"]
        return cls(index, plan.metric)

    def on_gpus(self) -> VectorIndex | None:
        """A copy of this index on every GPU, for searching, when Faiss is a GPU build and sees one; else None.

        GPU indexes take no id selector and no SearchParameters, so tombstones are
        filtered after over-fetching and nprobe is set on the copy itself.
        """
        if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() < 1:
            return None
        try:
            copy = faiss.index_cpu_to_all_gpus(self.index)
        except RuntimeError:  # a kind the GPU build does not implement (HNSW, some transforms)
            return None
        gpu = VectorIndex(copy, self.metric)
        gpu._selector_ok = False
        gpu._params_cache = {}
        gpu._gpu = True
        return gpu

    @property
    def read_only(self) -> bool:
        """True when loaded with mmap: searchable, but vectors cannot be added."""
        return self._read_only

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, vectors: np.ndarray) -> None:
        """Train the index (IVF centroids, PQ codebooks) on a sample of the collection."""
        if not self.is_trained:
            if len(vectors) == 0:
                raise IndexSpecError("cannot train an index on an empty collection")
            try:
                with ivf_training_on_gpus(self.index):  # k-means on every GPU when faiss-gpu sees one
                    self.index.train(np.ascontiguousarray(vectors, dtype=np.float32))
            except RuntimeError as error:
                raise IndexSpecError(
                    f"Faiss could not train this index on {len(vectors)} vectors: {faiss_reason(error)}; "
                    "choose a smaller index or add more images"
                ) from None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under their catalog ids."""
        if self._read_only:
            # Faiss aborts the whole process when writing to read-only mmapped inverted lists.
            raise LookalikeError("this index was loaded read-only (mmap=True); load it without mmap to add vectors")
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def default_params(self) -> dict[str, int]:
        """Search-time parameters used when none are given."""
        if self._ivf is not None:
            return {"nprobe": min(int(self._ivf.nlist), max(8, int(self._ivf.nlist) // 10))}
        if self._hnsw is not None:
            return {"efSearch": DEFAULT_EF_SEARCH}
        return {}

    def search(
        self,
        queries: np.ndarray,
        k: int,
        nprobe: int | None = None,
        ef_search: int | None = None,
        exclude: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of shape (len(queries), k), best first; missing results have id -1 and score -inf.

        Scores are cosine similarities for both metrics (the vectors are unit
        length, so an L2 distance d is reported as 1 - d / 2).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        exclude = exclude if exclude is not None and len(exclude) else None
        fetch = k
        if exclude is not None and not self._selector_ok:
            fetch = k + len(exclude)  # filtered afterwards; see _selector_reaches_search
        fetch = max(1, min(fetch, max(self.count, 1)))
        params = self._search_params(nprobe, ef_search, exclude)
        distances, ids = self.index.search(queries, fetch, params=params)
        if exclude is not None and not self._selector_ok:
            distances, ids = _drop_ids(distances, ids, exclude)
        distances, ids = distances[:, :k], ids[:, :k]
        if ids.shape[1] < k:  # fewer vectors than k: pad, as Faiss itself does
            missing = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, missing)), constant_values=-1)
            distances = np.pad(distances, ((0, 0), (0, missing)))
        scores = (1.0 - distances / 2.0 if self.metric == "l2" else distances).astype(np.float32)
        scores[ids < 0] = -np.inf  # one value for every empty slot, whatever the metric or filtering path
        return scores, ids

    def _selector_reaches_search(self) -> bool:
        # IDMap over a PreTransform passes the selector to the wrong level, and IndexRefine
        # ignores selectors; filter afterwards there.
        outer = faiss.downcast_index(self.index)
        if isinstance(outer, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            return not isinstance(faiss.downcast_index(outer.index), (faiss.IndexPreTransform, faiss.IndexRefine))
        return isinstance(below_transforms(outer), faiss.IndexIVF)

    def _search_params(
        self, nprobe: int | None, ef_search: int | None, exclude: np.ndarray | None
    ) -> faiss.SearchParameters | None:
        """Parameters for one search, cached per knob values and exclusion array (compared by identity)."""
        defaults = self.default_params()
        key = (nprobe or defaults.get("nprobe"), ef_search or defaults.get("efSearch"))
        if self._gpu:
            if key[0]:
                faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", int(key[0]))
            return None
        if not self._takes_params:
            return None
        excluding = exclude if exclude is not None and self._selector_ok else None
        cached = self._params_cache.get(key)
        if cached is not None and cached[0] is excluding:
            return cached[1]
        keep_alive: list[object] = []  # Faiss selectors hold raw pointers: keep their owners alive
        selector = None
        if excluding is not None:
            batch = faiss.IDSelectorBatch(np.ascontiguousarray(excluding, dtype=np.int64))
            selector = faiss.IDSelectorNot(batch)
            keep_alive += [batch, selector]
        params = _params_for(self.index, selector, key[0], key[1], keep_alive)
        self._params_cache[key] = (excluding, params, keep_alive)
        return params

    def save(self, path: Path) -> str:
        """Write the index atomically; return the file's checksum."""
        atomic_write_with(path, lambda scratch: faiss.write_index(self.index, scratch))
        return file_checksum(path)

    def range_search(
        self, queries: np.ndarray, min_score: float, exclude: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query, (scores, ids) of every vector scoring at least `min_score`, best first.

        Faiss range search is exact for flat indexes and visits only nprobe lists for IVF ones;
        kinds that implement none (NSG) raise IndexSpecError. Tombstoned ids are dropped.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        # Cosine scores are inner products; an L2 distance d on unit vectors is the score 1 - d / 2.
        radius = float(min_score) if self.metric == "cosine" else float(2.0 * (1.0 - min_score))
        try:
            limits, distances, ids = self.index.range_search(queries, radius)
        except RuntimeError as error:
            raise IndexSpecError(f"this index kind has no range search: {faiss_reason(error)}") from None
        results = []
        for row in range(len(queries)):
            found = ids[limits[row] : limits[row + 1]]
            near = distances[limits[row] : limits[row + 1]]
            scores = (1.0 - near / 2.0 if self.metric == "l2" else near).astype(np.float32)
            keep = ~np.isin(found, exclude) if exclude is not None and len(exclude) else np.ones(len(found), bool)
            order = np.argsort(-scores[keep], kind="stable")
            results.append((scores[keep][order], found[keep][order].astype(np.int64)))
        return results


_threads = threading.local()


def use_one_search_thread() -> None:
    """Make Faiss use one OpenMP thread in the calling thread.

    A server request searches one vector: an OpenMP team gains nothing there, and on a busy machine its threads spin
    waiting for each other (measured: 8 ms instead of 0.9 ms of CPU per search of a 5,000-image flat index).
    Requests run side by side instead. OpenMP keeps this setting per thread, so the process's other Faiss calls
    (an ingest or a reindex in the same process) keep theirs.
    """
    if not getattr(_threads, "faiss_single", False):
        faiss.omp_set_num_threads(1)
        _threads.faiss_single = True


def _params_for(
    index: faiss.Index, selector: object, nprobe: int | None, ef_search: int | None, keep_alive: list[object]
) -> faiss.SearchParameters | None:
    """Nested SearchParameters matching the index's wrappers, carrying the selector and knobs."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        inner = _params_for(index.index, selector, nprobe, ef_search, keep_alive)
        if inner is None:
            return None
        params = faiss.SearchParametersPreTransform()
        params.index_params = inner
        keep_alive.append(inner)
        return params
    if isinstance(index, faiss.IndexRefine):
        # Refine takes no selector (see _selector_reaches_search) but passes knobs to its base index.
        # IndexRefine.search rejects parameters of any other type, so always build these.
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = index.k_factor
        base = _params_for(index.base_index, None, nprobe, ef_search, keep_alive)
        if base is not None:
            params.base_index_params = base
            keep_alive.append(base)
        return params
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        params = _params_for(index.index, None, nprobe, ef_search, keep_alive) or faiss.SearchParameters()
        if selector is not None and not isinstance(params, faiss.SearchParametersPreTransform):
            params.sel = selector
        return params
    if isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = int(nprobe or index.nprobe)
    elif isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()
        params.efSearch = int(ef_search or index.hnsw.efSearch)
    elif selector is None:
        return None
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return params


def _drop_ids(distances: np.ndarray, ids: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move excluded ids to the end of each row (as -1), keeping the order of the rest."""
    unwanted = np.isin(ids, exclude) | (ids < 0)
    order = np.argsort(unwanted, axis=1, kind="stable")
    ids = np.take_along_axis(np.where(unwanted, -1, ids), order, axis=1)
    fill = np.inf if distances.dtype.kind == "f" else 0
    distances = np.take_along_axis(np.where(unwanted, fill, distances), order, axis=1)
    return distances, ids


def faiss_reason(error: Exception) -> str:
    """The readable part of a Faiss C++ exception.

    Faiss says "Error in <C++ function> at <file>:<line>: [Error: '<check>' failed: ]<reason>"; keep <reason>.
    """
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", str(error).strip())
    return text.rsplit("failed: ", 1)[-1].rsplit("Error: ", 1)[-1].strip() or type(error).__name__
