"""The Faiss index: a derived artifact, rebuilt from the catalog's embeddings at any time.

Index kinds are Faiss factory strings plus search-time parameters (nprobe,
efSearch), not a class per kind: `plan_index` turns a kind name (flat, ivf,
ivfpq, hnsw, auto) or any factory string into a factory string with its
parameters clamped to what the collection's size supports. Faiss ids are
catalog ids, so every hit maps straight back to a catalog row.
"""

from __future__ import annotations

import hashlib
import math
import os
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
# Read-only mapping: IO_FLAG_MMAP_IFC (Faiss >= 1.11) maps every kind's data in place; IO_FLAG_MMAP only IVF lists.
MMAP_FLAGS = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP) | faiss.IO_FLAG_READ_ONLY


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
        # Planning knobs ride in options: {"max_memory_bytes": ..., "target_recall": ...}.
        budget = options.pop("max_memory_bytes", None)
        recall = float(options.pop("target_recall", DEFAULT_TARGET_RECALL))
        return plan_auto(count, dim, metric, max_memory=budget, target_recall=recall, nlist=options.get("nlist"))
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


# --- auto: plan before building ------------------------------------------------------------------------

DEFAULT_TARGET_RECALL = 0.95
LARGE_LIMIT = 1_000_000  # above this ("millions"), the IVF coarse quantizer is an HNSW graph over the centroids
# ... and from this many lists on below it: scanning 2,530 centroids of 1280 floats costs ~0.2 ms a query, half
# of an IVF search at recall 0.95 on 100k vectors (docs/benchmarks.md); the graph finds them in a fraction.
HNSW_QUANTIZER_NLIST = 2048
QUANTIZER_EF_SEARCH = 64  # stored in the file: the graph's beam when it picks the nprobe nearest lists
NLIST_CAP_START = 4096  # nlist grows as 8 x sqrt(N) up to this, then as max(this, 4 x sqrt(N))
HNSW_QUANTIZER_M = 32
# Effective rates on 2 AVX-512 cores, measured by benchmarks/scale.py: k-means and list assignment run as BLAS
# (~100 GFLOP/s), graph insertion and PQ encoding as SIMD loops, OPQ training mostly in small SVDs.
FLOPS_PER_SECOND = 1e11
SCALAR_FLOPS_PER_SECOND = 1e10
OPQ_FLOPS_PER_SECOND = 3.5e9
KMEANS_ITERATIONS = 25  # Faiss's default
HNSW_QUANTIZER_VISITS = 600  # distance computations per vector assigned through an HNSW quantizer (measured)

# Recall@10 each vector codec tops out at (any nprobe) on 1280-d embeddings, as measured by benchmarks/scale.py
# at 1M vectors (SQ4 and 0.5 bytes/dim PQ at 100k, where they already did worse; the ceilings drop as N grows).
# The planner picks the smallest code whose ceiling meets the target; `lookalike tune` then measures the real one.
CODEC_RECALL = {"Flat": 1.0, "SQ8": 0.97, "SQ6": 0.89, "SQ4": 0.75}
PQ_RECALL = ((0.5, 0.85), (0.125, 0.60), (0.05, 0.30), (0.0, 0.20))  # (bytes per dim at least, recall@10)


@dataclass(frozen=True)
class PlanEstimate:
    """What a plan is predicted to cost: memory, training, build time, and the recall its codec can reach."""

    memory_bytes: int
    bytes_per_vector: float
    overhead_bytes: int
    train_size: int
    build_seconds: float
    recall_ceiling: float

    def to_dict(self) -> dict:
        return asdict(self)


def auto_nlist(count: int) -> int:
    """Inverted lists for `count` vectors: ~8 x sqrt(N), then max(4096, 4 x sqrt(N)) (Faiss: 4..16 x sqrt(N)).

    Fewer lists per vector at large N keep k-means training (cost ~ train size x nlist) affordable;
    the result stays within the Faiss guideline band for N >= 262,144 and is clamped so every list gets
    MIN_POINTS_PER_CENTROID training points.
    """
    root = math.sqrt(max(count, 1))
    wanted = round(8 * root) if 8 * root <= NLIST_CAP_START else max(NLIST_CAP_START, round(4 * root))
    return max(1, min(wanted, count // MIN_POINTS_PER_CENTROID))


def plan_auto(
    count: int,
    dim: int,
    metric: str = "cosine",
    max_memory: int | float | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    nlist: int | None = None,
    flat_limit: int = FLAT_LIMIT,
    large_limit: int = LARGE_LIMIT,
    hnsw_quantizer_nlist: int = HNSW_QUANTIZER_NLIST,
) -> IndexPlan:
    """The index `auto` builds for `count` vectors of `dim` dimensions, chosen before building anything.

    - N <= flat_limit: exact search (Flat), a few ms and nothing to train.
    - up to large_limit: IVF-Flat with ~8 x sqrt(N) lists (nprobe tunes speed against recall), with an HNSW
      graph as coarse quantizer once there are hnsw_quantizer_nlist lists or more.
    - above large_limit: IVF with an HNSW coarse quantizer always, so picking a query's lists stays cheap with
      tens of thousands of lists.
    - when the float vectors do not fit `max_memory` (bytes): the same layout with compressed codes, the
      smallest of SQ8, SQ6, SQ4 or OPQ+PQ whose expected recall meets `target_recall` (else the one that fits
      with the best expected recall), or IndexSpecError when even the smallest PQ code does not fit.
    `flat_limit` and `large_limit` are parameters so tests can exercise every band with small sets.
    """
    if metric not in METRICS:
        raise IndexSpecError(f"unknown metric {metric!r}; choose cosine or l2")
    if not 0.0 < target_recall <= 1.0:
        raise IndexSpecError(f"target recall must be in (0, 1], not {target_recall}")
    if max_memory is not None and max_memory <= 0:
        raise IndexSpecError(f"memory budget must be positive, not {max_memory}")
    budget_note = f" within {_human_bytes(max_memory)}" if max_memory else ""
    if count <= flat_limit:
        flat = IndexPlan("flat", "Flat", metric, reason=f"{count} vectors <= {flat_limit}: exact search")
        if max_memory is None or estimate_plan(flat, count, dim).memory_bytes <= max_memory:
            return flat
        return _compressed(count, dim, metric, max_memory, target_recall, None, "exhaustive scan of compressed codes")
    lists = max(1, min(int(nlist), count // MIN_POINTS_PER_CENTROID)) if nlist else auto_nlist(count)
    quantizer = f"_HNSW{HNSW_QUANTIZER_M}" if count > large_limit or lists >= hnsw_quantizer_nlist else ""
    train_size = min(count, max(10_000, 50 * lists))
    layout = f"IVF with {lists} lists (~{lists / math.sqrt(count):.1f} x sqrt(N))" + (
        f" and an HNSW{HNSW_QUANTIZER_M} coarse quantizer" if quantizer else ""
    )
    plan = IndexPlan(
        "ivf",
        f"IVF{lists}{quantizer},Flat",
        metric,
        {"nlist": lists},
        train_size,
        f"{count} vectors: {layout}; float vectors, recall limited only by nprobe",
    )
    if max_memory is None or estimate_plan(plan, count, dim).memory_bytes <= max_memory:
        return plan if not budget_note else _with_reason(plan, plan.reason + budget_note)
    return _compressed(count, dim, metric, max_memory, target_recall, (lists, quantizer, train_size), layout)


def _compressed(
    count: int,
    dim: int,
    metric: str,
    max_memory: float,
    target_recall: float,
    ivf: tuple[int, str, int] | None,
    layout: str,
) -> IndexPlan:
    """The memory-bound plans: the same layout with SQ8/SQ6/SQ4 or OPQ+PQ codes."""
    prefix = f"IVF{ivf[0]}{ivf[1]}," if ivf else ""
    params = {"nlist": ivf[0]} if ivf else {}
    train_size = min(count, max(ivf[2] if ivf else 0, 65_536 if count >= 65_536 else 10_000))
    candidates = [(codec, CODEC_RECALL[codec], f"{prefix}{codec}", {}) for codec in ("SQ8", "SQ6", "SQ4")]
    # OPQ+PQ with 4 to 32 dimensions per sub-quantizer (8-bit codes; 4-bit below 256 x 39 training points).
    pq_ms = sorted((m for m in range(1, dim // 4 + 1) if dim % m == 0 and dim // m <= 32), reverse=True)
    for m in pq_ms:
        pq = f"PQ{m}" if count >= 256 * MIN_POINTS_PER_CENTROID else f"PQ{m}x4"
        candidates.append((f"OPQ+{pq}", _pq_recall(m / dim), f"OPQ{m},{prefix}{pq}", {"m": m}))
    fitting = []
    for codec, recall, factory, extra in candidates:
        kind = ("ivfpq" if extra else "ivf") if ivf else "factory"
        plan = IndexPlan(kind, factory, metric, {**params, **extra}, train_size)
        if estimate_plan(plan, count, dim).memory_bytes <= max_memory:
            fitting.append((codec, recall, plan))
    if not fitting:
        raise IndexSpecError(
            f"{count} vectors of dim {dim} do not fit in {_human_bytes(max_memory)} even as "
            f"{min(pq_ms, default=dim)}-byte PQ codes: raise the memory budget"
        )
    meeting = [item for item in fitting if item[1] >= target_recall]
    if meeting:
        codec, recall, plan = meeting[-1]  # candidates run from the biggest code down: the smallest that meets it
        why = f"expected recall@10 ~{recall:.2f} >= {target_recall}"
    else:
        codec, recall, plan = fitting[0]
        why = f"expected recall@10 ~{recall:.2f} is below the {target_recall} target: the best that fits"
    reason = f"{count} vectors: {layout}; float vectors exceed {_human_bytes(max_memory)}, so {codec} codes ({why})"
    return _with_reason(plan, reason)


def _pq_recall(bytes_per_dim: float) -> float:
    return next(recall for floor, recall in PQ_RECALL if bytes_per_dim >= floor)


def _with_reason(plan: IndexPlan, reason: str) -> IndexPlan:
    return IndexPlan(plan.kind, plan.factory, plan.metric, plan.params, plan.train_size, reason)


def _human_bytes(value: float | None) -> str:
    value = float(value or 0)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def estimate_plan(plan: IndexPlan, count: int, dim: int) -> PlanEstimate:
    """Predicted RAM (bytes per vector x N + fixed overhead), training set and build time of a plan.

    Bytes per vector come from Faiss itself (the code size of an empty index of that factory string) plus
    8 bytes of id (IVF) or an id map (other kinds) and the graph links of HNSW; the overhead counts
    centroids, codebooks and rotation matrices. Build time is a flop count over FLOPS_PER_SECOND: k-means
    (KMEANS_ITERATIONS over the training set), assignment of every vector to its list, codec training
    and HNSW insertion. It is a rough guide (within ~2-3x on a 2-core machine), not a promise.
    """
    factory = plan.factory
    try:
        probe = faiss.index_factory(dim, factory, METRICS[plan.metric])
    except Exception as error:  # noqa: BLE001
        raise IndexSpecError(f"Faiss cannot build {factory!r}: {_faiss_reason(error)}") from None
    ivf, hnsw = _find_ivf(probe), _find_hnsw(probe)
    inner = ivf if ivf is not None else hnsw.storage if hnsw is not None else _below_transforms(probe)
    inner = faiss.downcast_index(inner)
    code = float(inner.code_size) if hasattr(inner, "code_size") else float(inner.sa_code_size())
    per_vector = code + (8.0 if ivf is not None else 40.0)  # IVF list ids; else IndexIDMap2's id array + map
    overhead = 0.0
    flops = scalar = 0.0
    train = plan.train_size
    if hnsw is not None:
        links = hnsw.hnsw.nb_neighbors(0) + hnsw.hnsw.nb_neighbors(1) / max(1, hnsw.hnsw.nb_neighbors(1))
        per_vector += 4 * links + 12  # neighbour ids (level 0 plus the expected upper levels), offsets, levels
        ef_construction = int(plan.params.get("efConstruction", 40))
        scalar += count * ef_construction * 10 * dim * 2.0  # ~10 distance computations per beam slot (measured)
    if ivf is not None:
        nlist = int(ivf.nlist)
        overhead += nlist * dim * 4 + nlist * 24  # centroids, list headers
        quantizer = faiss.downcast_index(ivf.quantizer)
        k_iterations = min(train, 256 * nlist) * nlist * dim * 2.0 * KMEANS_ITERATIONS
        flops += k_iterations
        if isinstance(quantizer, faiss.IndexHNSW):
            overhead += nlist * (4 * 2 * quantizer.hnsw.nb_neighbors(1) + 12)
            scalar += (count + train) * HNSW_QUANTIZER_VISITS * dim * 2.0
        else:
            flops += count * nlist * dim * 2.0
        if isinstance(ivf, faiss.IndexIVFPQ) and plan.metric == "l2":
            overhead += nlist * ivf.pq.M * ivf.pq.ksub * 4  # precomputed tables
    pq = getattr(inner, "pq", None)
    if pq is not None:
        overhead += pq.M * pq.ksub * pq.dsub * 4
        scalar += min(train, 65_536) * pq.ksub * dim * 2.0 * KMEANS_ITERATIONS + count * pq.ksub * dim * 2.0
    outer = faiss.downcast_index(probe)
    if isinstance(outer, faiss.IndexPreTransform):
        for i in range(outer.chain.size()):
            transform = faiss.downcast_VectorTransform(outer.chain.at(i))
            overhead += transform.d_in * transform.d_out * 4
            if isinstance(transform, faiss.OPQMatrix):
                # niter rounds of a 4-iteration PQ training plus an SVD, on up to 65,536 points
                opq = transform.niter * (min(train, 65_536) * 256 * dim * 2.0 * 4 + 2.0 * dim**3)
                scalar += opq * SCALAR_FLOPS_PER_SECOND / OPQ_FLOPS_PER_SECOND
            flops += count * transform.d_in * transform.d_out * 2.0
    if isinstance(inner, faiss.IndexScalarQuantizer) or isinstance(ivf, faiss.IndexIVFScalarQuantizer):
        overhead += 2 * dim * 4
    recall = 1.0
    codec = factory.rsplit(",", 1)[-1]
    if codec in CODEC_RECALL:
        recall = CODEC_RECALL[codec]
    elif pq is not None:
        recall = _pq_recall(pq.M * pq.nbits / 8 / dim)
    memory = int(per_vector * count + overhead)
    seconds = flops / FLOPS_PER_SECOND + scalar / SCALAR_FLOPS_PER_SECOND + count * per_vector / 1e9  # + copying
    return PlanEstimate(memory, per_vector, int(overhead), train if not probe.is_trained else 0, seconds, recall)


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
    # The file's identity when the checksum was taken (see file_fingerprint); 0 when not recorded.
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0

    def fingerprint_matches(self, path: Path) -> bool:
        """True when `path` is still the very file whose checksum was recorded (same inode, size, times)."""
        return bool(self.inode) and file_fingerprint(path) == {
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "inode": self.inode,
        }


def file_fingerprint(path: Path) -> dict[str, int]:
    """size, mtime, ctime and inode of a file: any write, truncation, replacement or copy changes one of them.

    ctime cannot be set from user space (unlike mtime), so a file changed in place after its checksum
    was recorded does not keep a matching fingerprint.
    """
    info = os.stat(path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns, "inode": info.st_ino}


class VectorIndex:
    """A Faiss index whose ids are catalog ids, with search-time knobs and tombstone filtering."""

    def __init__(self, index: faiss.Index, metric: str) -> None:
        self.index = index
        self.metric = metric
        self._ivf = _find_ivf(index)
        self._hnsw = _find_hnsw(index)
        self._read_only = False  # set by load(mmap=True): the inverted lists are a read-only file mapping
        self._gpu = False
        self._selector_ok = self._selector_reaches_search()
        # Search parameters per (nprobe, efSearch): built once, not on every query (they cost ~20-60 us).
        self._params_cache: dict[tuple, tuple[object, object, list[object]]] = {}

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
        quantizer = faiss.downcast_index(ivf.quantizer) if ivf is not None else None
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efSearch = QUANTIZER_EF_SEARCH  # Faiss's 16 misses some of the nearest lists
        if isinstance(ivf, faiss.IndexIVFPQ):
            # The factory turns on polysemous training for 8-bit codes: seconds of training for
            # Hamming filtering that search never uses (polysemous_ht stays 0).
            ivf.do_polysemous_training = False
        hnsw = _find_hnsw(index)
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
        return isinstance(_below_transforms(outer), faiss.IndexIVF)

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
        excluding = exclude if exclude is not None and self._selector_ok else None
        cached = self._params_cache.get(key)
        if cached is not None and cached[0] is excluding:
            return cached[1]  # type: ignore[return-value]
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

    @classmethod
    def load(cls, path: Path, expected: IndexState, metric: str, mmap: bool = False) -> VectorIndex:
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
                if hashlib.blake2b(data, digest_size=16).hexdigest() != expected.checksum:
                    raise CorruptIndexError(f"{path} does not match the checksum the catalog recorded")
                index = faiss.deserialize_index(data)
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


def _map_verified(path: Path, expected: IndexState) -> faiss.Index:
    """Memory-map the file, having verified it (by fingerprint, else by checksum) and that it did not change since."""
    before = file_fingerprint(path)
    if not expected.fingerprint_matches(path) and file_checksum(path) != expected.checksum:
        raise CorruptIndexError(f"{path} does not match the checksum the catalog recorded")
    index = faiss.read_index(str(path), MMAP_FLAGS)
    if file_fingerprint(path) != before:
        raise CorruptIndexError(f"{path} changed while it was being opened")
    return index


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
