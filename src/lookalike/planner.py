"""The planner: which Faiss index to build for a collection, decided before building anything.

Index kinds are Faiss factory strings plus search-time parameters (nprobe,
efSearch), not a class per kind: `plan_index` turns a kind name (flat, ivf,
ivfpq, hnsw, auto) or any factory string into an `IndexPlan` whose parameters
are clamped to what the collection's size can train. `plan_auto` chooses by
size and memory budget; `estimate_plan` predicts memory and build time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import faiss

from .compression import RERANK_FACTOR, expected_recall, pca_factory
from .errors import IndexSpecError
from .index import METRICS, below_transforms, faiss_reason, find_hnsw, find_ivf
from .rerank import RERANK_PARAM
from .sizes import format_size

KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw")
FLAT_LIMIT = 20_000  # below this, exact search is fast enough (a few ms) and needs no training
MIN_POINTS_PER_CENTROID = 39  # Faiss warns below this many training points per centroid
DEFAULT_TARGET_RECALL = 0.95  # recall@k that auto planning and `tune` aim for unless told otherwise


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
    nlist, m, nbits, M, efConstruction, and rerank (candidates re-ranked per result, see rerank.py).
    """
    if metric not in METRICS:
        raise IndexSpecError(f"unknown metric {metric!r}; choose cosine or l2")
    options = dict(options or {})
    rerank = int(options.pop(RERANK_PARAM, 1))
    plan = _plan_kind(kind, count, dim, metric, options)
    if rerank <= 1:
        return plan
    # Any kind may re-rank k x `rerank` candidates with the catalog's float vectors (rerank.py).
    return IndexPlan(
        plan.kind,
        plan.factory,
        plan.metric,
        {**plan.params, RERANK_PARAM: rerank},
        plan.train_size,
        (f"{plan.reason}; re-ranking {rerank} x k candidates with the catalog's float vectors"),
    )


def _plan_kind(kind: str, count: int, dim: int, metric: str, options: dict) -> IndexPlan:
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

LARGE_LIMIT = 1_000_000  # above this ("millions"), the IVF coarse quantizer is an HNSW graph over the centroids
# ... and from this many lists on below it: scanning 2,530 centroids of 1280 floats costs ~0.2 ms a query, half
# of an IVF search at recall 0.95 on 100k vectors (docs/benchmarks.md); the graph finds them in a fraction.
HNSW_QUANTIZER_NLIST = 2048
NLIST_CAP_START = 4096  # nlist grows as 8 x sqrt(N) up to this, then as max(this, 4 x sqrt(N))
HNSW_QUANTIZER_M = 32
# Effective rates on 2 AVX-512 cores, measured by benchmarks/scale.py: k-means and list assignment run as BLAS
# (~100 GFLOP/s), graph insertion and PQ encoding as SIMD loops, OPQ training mostly in small SVDs.
FLOPS_PER_SECOND = 1e11
SCALAR_FLOPS_PER_SECOND = 1e10
OPQ_FLOPS_PER_SECOND = 3.5e9
KMEANS_ITERATIONS = 25  # Faiss's default
HNSW_QUANTIZER_VISITS = 600  # distance computations per vector assigned through an HNSW quantizer (measured)


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
    return clamp_nlist(_wanted_nlist(count), count)


def _wanted_nlist(count: int) -> int:
    root = math.sqrt(max(count, 1))
    return round(8 * root) if 8 * root <= NLIST_CAP_START else max(NLIST_CAP_START, round(4 * root))


def clamp_nlist(nlist: int, count: int) -> int:
    """`nlist`, lowered so that every list gets MIN_POINTS_PER_CENTROID training points (at least 1)."""
    return max(1, min(int(nlist), count // MIN_POINTS_PER_CENTROID))


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
      smallest of SQ8, SQ6, SQ4, PCA+SQ8 or OPQ+PQ whose expected recall meets `target_recall`; if none
      does, PCA+SQ8 re-ranked with the catalog's float vectors (params["rerank"], see rerank.py); else the
      one that fits with the best expected recall, or IndexSpecError when even the smallest PQ code does not.
    `flat_limit` and `large_limit` are parameters so tests can exercise every band with small sets.
    """
    if metric not in METRICS:
        raise IndexSpecError(f"unknown metric {metric!r}; choose cosine or l2")
    if not 0.0 < target_recall <= 1.0:
        raise IndexSpecError(f"target recall must be in (0, 1], not {target_recall}")
    if max_memory is not None and max_memory <= 0:
        raise IndexSpecError(f"memory budget must be positive, not {max_memory}")
    budget_note = f" within {format_size(max_memory)}" if max_memory else ""
    if count <= flat_limit:
        flat = IndexPlan("flat", "Flat", metric, reason=f"{count} vectors <= {flat_limit}: exact search")
        if max_memory is None or estimate_plan(flat, count, dim).memory_bytes <= max_memory:
            return flat
        return _compressed(count, dim, metric, max_memory, target_recall, None, "exhaustive scan of compressed codes")
    lists = clamp_nlist(nlist, count) if nlist else auto_nlist(count)
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
    """The memory-bound plans: the same layout with SQ8/SQ6/SQ4, PCA + SQ8 or OPQ+PQ codes.

    The smallest plan whose expected recall meets the target wins; plans that re-rank with the catalog's
    float vectors (reading k x RERANK_FACTOR rows per query) come in only when no plain one meets it.
    """
    prefix = f"IVF{ivf[0]}{ivf[1]}," if ivf else ""
    params = {"nlist": ivf[0]} if ivf else {}
    train_size = min(count, max(ivf[2] if ivf else 0, 65_536 if count >= 65_536 else 10_000))
    fitting = []
    for codec, factory, extra, plan_metric in _candidates(dim, prefix, count, metric):
        kind = ("ivfpq" if "m" in extra else "ivf") if ivf else "factory"
        plan = IndexPlan(kind, factory, plan_metric, {**params, **extra}, train_size)
        estimate = estimate_plan(plan, count, dim)
        if estimate.memory_bytes <= max_memory:
            fitting.append((estimate.memory_bytes, codec, estimate.recall_ceiling, plan))
    if not fitting:
        smallest = min((m for m in range(1, dim // 4 + 1) if dim % m == 0 and dim // m <= 32), default=dim)
        raise IndexSpecError(
            f"{count} vectors of dim {dim} do not fit in {format_size(max_memory)} even as "
            f"{smallest}-byte PQ codes: raise the memory budget"
        )
    fitting.sort(key=lambda item: item[0])  # smallest first
    plain = [item for item in fitting if RERANK_PARAM not in item[3].params]
    meeting = [item for item in plain if item[2] >= target_recall]
    meeting = meeting or [item for item in fitting if item[2] >= target_recall]
    if meeting:
        _, codec, recall, plan = meeting[0]
        why = f"expected recall@10 ~{recall:.2f} >= {target_recall}"
    else:
        _, codec, recall, plan = max(fitting, key=lambda item: item[2])
        why = f"expected recall@10 ~{recall:.2f} is below the {target_recall} target: the best that fits"
    reason = f"{count} vectors: {layout}; float vectors exceed {format_size(max_memory)}, so {codec} ({why})"
    return _with_reason(plan, reason)


def _candidates(dim: int, prefix: str, count: int, metric: str) -> list[tuple[str, str, dict[str, int], str]]:
    """(codec label, factory, extra params, metric) of every compressed plan considered."""
    plain: dict[str, int] = {}
    out = [(f"{codec} codes", f"{prefix}{codec}", plain, metric) for codec in ("SQ8", "SQ6", "SQ4")]
    pca = pca_factory(dim, prefix)
    if pca is not None:
        # PCA centres the vectors, and inner products of centred vectors rank differently from cosines;
        # L2 distances do not change, and on unit vectors they rank like cosines (scores stay cosines).
        label = pca.split(",", 1)[0] + "+SQ8 codes"
        out.append((label, pca, plain, "l2"))
        rerank = f"{label} with the catalog's float vectors re-ranking {RERANK_FACTOR} x k candidates"
        out.append((rerank, pca, {RERANK_PARAM: RERANK_FACTOR}, "l2"))
    # OPQ+PQ with 4 to 32 dimensions per sub-quantizer (8-bit codes; 4-bit below 256 x 39 training points).
    for m in sorted((m for m in range(1, dim // 4 + 1) if dim % m == 0 and dim // m <= 32), reverse=True):
        pq = f"PQ{m}" if count >= 256 * MIN_POINTS_PER_CENTROID else f"PQ{m}x4"
        out.append((f"OPQ+{pq} codes", f"OPQ{m},{prefix}{pq}", {"m": m}, metric))
    return out


def _with_reason(plan: IndexPlan, reason: str) -> IndexPlan:
    return IndexPlan(plan.kind, plan.factory, plan.metric, plan.params, plan.train_size, reason)


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
        raise IndexSpecError(f"Faiss cannot build {factory!r}: {faiss_reason(error)}") from None
    ivf, hnsw = find_ivf(probe), find_hnsw(probe)
    inner = ivf if ivf is not None else hnsw.storage if hnsw is not None else below_transforms(probe)
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
    recall = expected_recall(factory, plan.params, pq.M * pq.nbits / 8 / dim if pq is not None else None)
    memory = int(per_vector * count + overhead)
    seconds = flops / FLOPS_PER_SECOND + scalar / SCALAR_FLOPS_PER_SECOND + count * per_vector / 1e9  # + copying
    return PlanEstimate(memory, per_vector, int(overhead), train if not probe.is_trained else 0, seconds, recall)


def _plan_ivf(count: int, options: dict[str, int], metric: str, kind: str, dim: int = 0) -> IndexPlan:
    wanted = int(options.get("nlist") or _wanted_nlist(count))
    nlist = clamp_nlist(wanted, count)
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
            f"{factory!r} ({faiss_reason(error)})"
        ) from None
    needs_training = not probe.is_trained
    ivf = find_ivf(probe)
    params = {"nlist": int(ivf.nlist)} if ivf is not None else {}
    if ivf is not None and count and ivf.nlist > count:
        raise IndexSpecError(f"{factory!r} needs at least {ivf.nlist} vectors to train; the collection has {count}")
    train_size = min(count, max(10_000, 64 * params.get("nlist", 0))) if needs_training else 0
    return IndexPlan("factory", factory, metric, params, train_size, "Faiss factory string as given")
