"""The Faiss index: a derived artifact, rebuilt from the catalog's embeddings at any time.

Index kinds are Faiss factory strings plus search-time parameters (nprobe,
efSearch), not a class per kind: `plan_index` turns a kind name (flat, ivf,
ivfpq, hnsw, auto) or any factory string into a factory string with its
parameters clamped to what the collection's size supports. Faiss ids are
catalog ids, so every hit maps straight back to a catalog row.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from .errors import CorruptIndexError, IndexSpecError, LookalikeError
from .storage import atomic_write_with, file_checksum

INDEX_FILE = "index.faiss"
KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw")
METRICS = {"cosine": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
FLAT_LIMIT = 20_000  # below this, exact search is fast enough (a few ms) and needs no training
MIN_POINTS_PER_CENTROID = 39  # Faiss warns below this many training points per centroid
DEFAULT_EF_SEARCH = 64


@dataclass(frozen=True)
class IndexPlan:
    """What to build: the factory string and the parameters that went into it."""

    kind: str
    factory: str
    metric: str = "cosine"
    params: dict[str, int] = field(default_factory=dict)
    train_size: int = 0
    reason: str = ""

    def to_dict(self) -> dict:
        """JSON-ready form for the manifest."""
        return asdict(self)


def plan_index(
    kind: str, count: int, dim: int, metric: str = "cosine", options: dict[str, int] | None = None
) -> IndexPlan:
    """Choose a factory string for `count` vectors of `dim` dimensions.

    `kind` is one of KINDS or a Faiss index_factory string; `options` may set
    nlist, m, nbits, M, efConstruction.
    """
    if metric not in METRICS:
        raise IndexSpecError(f"unknown metric {metric!r}; choose cosine or l2")
    options = dict(options or {})
    if kind == "auto":
        if count <= FLAT_LIMIT:
            return IndexPlan("flat", "Flat", metric, reason=f"{count} vectors <= {FLAT_LIMIT}: exact search")
        plan = _plan_ivf(count, options, metric, "ivf")
        return IndexPlan(
            plan.kind,
            plan.factory,
            metric,
            plan.params,
            plan.train_size,
            f"{count} vectors: IVF with nlist {plan.params['nlist']} (~8 x sqrt(N))",
        )
    if kind == "flat":
        return IndexPlan("flat", "Flat", metric, reason="exact search")
    if kind in ("ivf", "ivfpq"):
        return _plan_ivf(count, options, metric, kind, dim)
    if kind == "hnsw":
        m = int(options.get("M", 32))
        ef_construction = int(options.get("efConstruction", 80))
        return IndexPlan(
            "hnsw",
            f"HNSW{m},Flat",
            metric,
            {"M": m, "efConstruction": ef_construction},
            reason="graph index: fast, no training, more memory",
        )
    return _plan_factory_string(kind, count, dim, metric)


def _plan_ivf(count: int, options: dict[str, int], metric: str, kind: str, dim: int = 0) -> IndexPlan:
    wanted = int(options.get("nlist") or max(1, round(8 * math.sqrt(max(count, 1)))))
    nlist = max(1, min(wanted, count // MIN_POINTS_PER_CENTROID))
    params = {"nlist": nlist}
    if kind == "ivf":
        factory = f"IVF{nlist},Flat"
        train_size = min(count, max(nlist * 64, 10_000))
    else:
        m = int(options.get("m") or _default_pq_m(dim))
        if dim % m:
            raise IndexSpecError(f"PQ m={m} must divide the vector dimension {dim}")
        nbits = int(options.get("nbits", 8))
        # k-means needs at least as many points as the 2**nbits centroids of each codebook.
        nbits = max(1, min(nbits, int(math.log2(max(2, count)))))
        params.update(m=m, nbits=nbits)
        factory = f"IVF{nlist},PQ{m}x{nbits}"
        train_size = min(count, max(nlist * 64, (1 << nbits) * 64, 10_000))
    clamped = " (clamped to the collection's size)" if nlist < wanted else ""
    return IndexPlan(kind, factory, metric, params, train_size, f"IVF with nlist {nlist}{clamped}")


def _default_pq_m(dim: int) -> int:
    for m in (64, 32, 16, 8, 4, 2, 1):
        if dim % m == 0 and dim // m >= 8 or m == 1:
            return m
    return 1


def _plan_factory_string(factory: str, count: int, dim: int, metric: str) -> IndexPlan:
    try:
        probe = faiss.index_factory(dim, factory, METRICS[metric])
    except Exception as error:  # noqa: BLE001 - faiss raises RuntimeError with C++ text
        raise IndexSpecError(
            f"not an index kind ({', '.join(KINDS)}) nor a Faiss factory string Faiss accepts: "
            f"{factory!r} ({_faiss_reason(error)})"
        ) from None
    needs_training = not probe.is_trained
    ivf = _find_ivf(probe)
    params = {"nlist": int(ivf.nlist)} if ivf is not None else {}
    if ivf is not None and count and ivf.nlist > count:
        raise IndexSpecError(f"{factory!r} needs at least {ivf.nlist} vectors to train; the collection has {count}")
    train_size = min(count, max(10_000, 64 * params.get("nlist", 0))) if needs_training else 0
    return IndexPlan("factory", factory, metric, params, train_size, "Faiss factory string as given")


def _find_ivf(index: faiss.Index) -> faiss.IndexIVF | None:
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


def _find_hnsw(index: faiss.Index) -> faiss.IndexHNSW | None:
    index = faiss.downcast_index(index)
    while True:
        if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        else:
            return index if isinstance(index, faiss.IndexHNSW) else None


def _below_transforms(index: faiss.Index) -> faiss.Index:
    """The index under any PreTransform layers (PCA, OPQ, ...)."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


@dataclass(frozen=True)
class IndexState:
    """What the catalog records of the Faiss file it last wrote, checked before loading it."""

    checksum: str
    count: int
    dim: int
    high_water: int  # every catalog id <= this was added (or has since been tombstoned)


class VectorIndex:
    """A Faiss index whose ids are catalog ids, with search-time knobs and tombstone filtering."""

    def __init__(self, index: faiss.Index, metric: str) -> None:
        self.index = index
        self.metric = metric
        self._ivf = _find_ivf(index)
        self._hnsw = _find_hnsw(index)
        self._read_only = False  # set by load(mmap=True): the inverted lists are a read-only file mapping

    @classmethod
    def create(cls, plan: IndexPlan, dim: int) -> VectorIndex:
        """An empty, untrained index for `plan`."""
        try:
            index = faiss.index_factory(dim, plan.factory, METRICS[plan.metric])
        except Exception as error:  # noqa: BLE001
            raise IndexSpecError(f"Faiss cannot build {plan.factory!r}: {_faiss_reason(error)}") from None
        # IVF stores caller ids itself (also under PCA/OPQ transforms); anything else, a Refine
        # over IVF included, has no add_with_ids of its own and takes them through an IDMap.
        if not isinstance(_below_transforms(index), (faiss.IndexIVF, faiss.IndexIDMap, faiss.IndexIDMap2)):
            index = faiss.IndexIDMap2(index)
        ivf = _find_ivf(index)
        if isinstance(ivf, faiss.IndexIVFPQ):
            # The factory turns on polysemous training for 8-bit codes: seconds of training for
            # Hamming filtering that search never uses (polysemous_ht stays 0).
            ivf.do_polysemous_training = False
        hnsw = _find_hnsw(index)
        if hnsw is not None and "efConstruction" in plan.params:
            hnsw.hnsw.efConstruction = plan.params["efConstruction"]
        return cls(index, plan.metric)

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
                self.index.train(np.ascontiguousarray(vectors, dtype=np.float32))
            except RuntimeError as error:
                raise IndexSpecError(
                    f"Faiss could not train this index on {len(vectors)} vectors: {_faiss_reason(error)}; "
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
        if exclude is not None and not self._selector_reaches_search():
            fetch = k + len(exclude)  # filtered afterwards; see _selector_reaches_search
        fetch = max(1, min(fetch, max(self.count, 1)))
        keep_alive: list[object] = []  # Faiss selectors hold raw pointers: keep their owners alive
        params = self._search_params(nprobe, ef_search, exclude, keep_alive)
        distances, ids = self.index.search(queries, fetch, params=params)
        if exclude is not None:
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
        return isinstance(_below_transforms(outer), faiss.IndexIVF)

    def _search_params(
        self, nprobe: int | None, ef_search: int | None, exclude: np.ndarray | None, keep_alive: list[object]
    ) -> faiss.SearchParameters | None:
        defaults = self.default_params()
        selector = None
        if exclude is not None and self._selector_reaches_search():
            batch = faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64))
            selector = faiss.IDSelectorNot(batch)
            keep_alive += [batch, selector]
        return _params_for(
            self.index, selector, nprobe or defaults.get("nprobe"), ef_search or defaults.get("efSearch"), keep_alive
        )

    def save(self, path: Path) -> str:
        """Write the index atomically; return the file's checksum."""
        atomic_write_with(path, lambda scratch: faiss.write_index(self.index, scratch))
        return file_checksum(path)

    @classmethod
    def load(cls, path: Path, expected: IndexState, metric: str, mmap: bool = False) -> VectorIndex:
        """Read a Faiss file after checking it is the one the catalog recorded.

        faiss.read_index is not a validator: a damaged file can load silently
        wrong or ask for absurd amounts of memory, so the checksum is verified first.
        """
        if metric not in METRICS:
            raise IndexSpecError(f"unknown metric {metric!r}; choose cosine or l2")
        if not path.is_file():
            raise CorruptIndexError(f"{path} is missing")
        checksum = file_checksum(path)
        if checksum != expected.checksum:
            raise CorruptIndexError(f"{path} does not match the checksum the catalog recorded")
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(path), flags)
        except (RuntimeError, MemoryError) as error:  # MemoryError: Faiss's std::bad_alloc
            raise CorruptIndexError(f"{path} cannot be read by Faiss: {_faiss_reason(error)}") from None
        if index.ntotal != expected.count or index.d != expected.dim:
            raise CorruptIndexError(
                f"{path} holds {index.ntotal} vectors of dim {index.d}; "
                f"the catalog expected {expected.count} of dim {expected.dim}"
            )
        if index.metric_type != METRICS[metric]:
            # Scores would come out as cosines of the wrong formula (1 - ip/2, or raw L2 distances).
            built_for = next(name for name, value in METRICS.items() if value == index.metric_type)
            raise CorruptIndexError(f"{path} was built for the {built_for} metric, not {metric}")
        loaded = cls(index, metric)
        loaded._read_only = mmap
        return loaded


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


def _faiss_reason(error: Exception) -> str:
    """The readable part of a Faiss C++ exception.

    Faiss says "Error in <C++ function> at <file>:<line>: [Error: '<check>' failed: ]<reason>"; keep <reason>.
    """
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", str(error).strip())
    return text.rsplit("failed: ", 1)[-1].rsplit("Error: ", 1)[-1].strip() or type(error).__name__


def parse_factory_nlist(factory: str) -> int | None:
    """The nlist of an 'IVF<n>...' factory string, if it has one."""
    match = re.search(r"IVF(\d+)", factory)
    return int(match.group(1)) if match else None
