"""Tuning: measure recall against speed on the collection's own vectors and choose the best setting.

A pure measurement: `Collection.tune` stores what it chooses. `measure_collection` holds out a
seeded sample of the stored embeddings as queries, computes their exact neighbours
by streaming every stored vector (no second index in memory), then sweeps the index's
search-time knob (nprobe for IVF kinds, efSearch for HNSW) and measures recall@k and latency at each
value. The queries are themselves in the collection: each query's own id is dropped from both the exact
neighbours and the index's results, so recall@k is about its k nearest *other* images. Latency is
single-query (one query per search call, as `lookalike search` with one image runs it; p50 and p99),
and the batch time per query (all queries in one call) is reported beside it.

The fastest operating point whose recall@k meets the target is chosen; `Collection.tune` stores it
as the collection's search default, which every later search uses unless told otherwise. Search
cost grows with the knob, so "fastest" is the smallest value meeting the target: that is robust to
timing noise where two measured latencies are close. When no value meets the target, the best-recall
point is stored and `TuneResult.met` is False.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import faiss
import numpy as np

from .catalog import Catalog
from .errors import InvalidArgumentError
from .index import VectorIndex, find_hnsw, find_ivf
from .planner import DEFAULT_TARGET_RECALL
from .rerank import rerank

DEFAULT_QUERIES = 500
# A plan's re-ranking: (candidates fetched per result, function re-scoring (queries, candidate ids, k) exactly).
Rescore = tuple[int, Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]]
LATENCY_QUERIES = 200  # queries timed one by one at each point
HNSW_EF_VALUES = (16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class OperatingPoint:
    """One measured setting of the search-time knob."""

    param: str  # "nprobe", "efSearch", or "" for an index with nothing to tune
    value: int
    recall: float  # recall@k against exact search
    recall_at_1: float
    p50_ms: float  # single-query latency
    p99_ms: float
    batch_ms_per_query: float

    @property
    def setting(self) -> dict[str, int]:
        """The search_defaults entry for this point."""
        return {self.param: self.value} if self.param else {}

    def label(self) -> str:
        return f"{self.param}={self.value}" if self.param else "exact"


@dataclass(frozen=True)
class TuneResult:
    """What a tuning run measured and chose."""

    factory: str
    count: int
    k: int
    queries: int
    target_recall: float
    param: str
    points: list[OperatingPoint] = field(default_factory=list)
    chosen: OperatingPoint | None = None
    met: bool = False
    stored: bool = False

    @property
    def tunable(self) -> bool:
        return bool(self.param)

    def frontier(self) -> list[OperatingPoint]:
        """The points no other point beats on both recall and latency, fastest first."""
        best = -1.0
        kept = []
        for point in sorted(self.points, key=lambda p: (p.p50_ms, -p.recall)):
            if point.recall > best:
                kept.append(point)
                best = point.recall
        return kept

    def to_dict(self) -> dict:
        data = asdict(self)
        data["frontier"] = [asdict(p) for p in self.frontier()]
        return data

    def summary(self) -> dict[str, Any]:
        """What the collection stores of this run beside the chosen setting."""
        chosen = self.chosen
        return {
            "factory": self.factory,
            "count": self.count,
            "k": self.k,
            "target_recall": self.target_recall,
            "recall": round(chosen.recall, 4) if chosen else None,
            "p50_ms": round(chosen.p50_ms, 3) if chosen else None,
            "met": self.met,
            "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def as_stored(self) -> TuneResult:
        """This result, marked as kept as the collection's search default."""
        return replace(self, stored=True)


def sweep_values(index: VectorIndex) -> tuple[str, list[int]]:
    """The knob of this index and the values to try: 1, 2, 4, ... nlist, or 16 .. 1024 for HNSW."""
    ivf = find_ivf(index.index)
    if ivf is not None:
        nlist = int(ivf.nlist)
        values = [v for v in (2**i for i in range(32)) if v < nlist] + [nlist]
        return "nprobe", values
    if find_hnsw(index.index) is not None:
        return "efSearch", list(HNSW_EF_VALUES)
    return "", []


def exact_neighbours(
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    query_ids: np.ndarray,
    k: int,
    metric: str = "cosine",
) -> np.ndarray:
    """Ids of each query's k nearest stored vectors other than itself, by streaming (ids, vectors) batches.

    Cosine ranks by inner product; l2 by squared distance (the same order for the unit vectors lookalike
    stores, but computed as asked).
    """
    keep = k + 1  # one more, for the query itself
    heap = faiss.ResultHeap(len(queries), keep, keep_max=metric == "cosine")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    for ids, vectors in batches:
        if metric == "cosine":
            scores = queries @ vectors.T
        else:
            scores = (queries**2).sum(1)[:, None] - 2 * queries @ vectors.T + (vectors**2).sum(1)[None, :]
        take = min(keep, scores.shape[1])
        part = np.argpartition(-scores if metric == "cosine" else scores, take - 1, axis=1)[:, :take]
        heap.add_result(
            np.ascontiguousarray(np.take_along_axis(scores, part, axis=1), dtype=np.float32),
            np.ascontiguousarray(ids[part], dtype=np.int64),
        )
    heap.finalize()
    return drop_self(heap.I, query_ids, k)


def drop_self(ids: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    """Each row without its query's own id, cut to k columns (padded with -1)."""
    out = np.full((len(ids), k), -1, dtype=np.int64)
    for row, (found, own) in enumerate(zip(ids, query_ids)):
        others = found[(found != own) & (found >= 0)][:k]
        out[row, : len(others)] = others
    return out


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of each query's true k nearest found among its first k results."""
    total = 0.0
    for got, want in zip(found[:, :k], truth[:, :k]):
        want = want[want >= 0]
        if len(want):
            total += len(np.intersect1d(got, want)) / len(want)
    return total / max(1, len(truth))


def measure(
    index: VectorIndex,
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
    k: int,
    param: str,
    value: int,
    exclude: np.ndarray | None = None,
    latency_queries: int = LATENCY_QUERIES,
    rescore: Rescore | None = None,
) -> OperatingPoint:
    """Recall and latency of `index` with the knob at `value` (through lookalike's own search path).

    With `rescore` (a plan that re-ranks, see rerank.py), as the collection's search does: `factor` x (k + 1)
    candidates from the index, re-scored exactly, the best k + 1 kept.
    """
    knobs = {"nprobe": value} if param == "nprobe" else {"ef_search": value} if param == "efSearch" else {}

    def search(rows: np.ndarray) -> np.ndarray:
        if rescore is None:
            return index.search(rows, k + 1, exclude=exclude, **knobs)[1]
        factor, exact = rescore
        _, candidates = index.search(rows, (k + 1) * factor, exclude=exclude, **knobs)
        return exact(rows, candidates, k + 1)[1]

    start = time.perf_counter()
    found = search(queries)
    batch = time.perf_counter() - start
    found = drop_self(found, query_ids, k)
    timed = queries[: max(1, min(latency_queries, len(queries)))]
    for row in timed[:3]:  # warm up caches and Faiss's thread pool
        search(row[None])
    times = np.empty(len(timed))
    for i, row in enumerate(timed):
        tick = time.perf_counter_ns()
        search(row[None])
        times[i] = (time.perf_counter_ns() - tick) / 1e6
    return OperatingPoint(
        param,
        int(value),
        recall_at(found, truth, k),
        recall_at(found, truth, 1),
        float(np.percentile(times, 50)),
        float(np.percentile(times, 99)),
        batch * 1000 / len(queries),
    )


def tune_index(
    index: VectorIndex,
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
    k: int = 10,
    target_recall: float = DEFAULT_TARGET_RECALL,
    exclude: np.ndarray | None = None,
    values: list[int] | None = None,
    latency_queries: int = LATENCY_QUERIES,
    full: bool = False,
    rescore: Rescore | None = None,
) -> tuple[str, list[OperatingPoint]]:
    """Sweep the index's knob; stop once recall reaches 1.0, or two values after the first that meets the target.

    With `full`, every value is measured.
    """
    param, default_values = sweep_values(index)
    if not param:
        return "", []
    points: list[OperatingPoint] = []
    after_target = 0
    for value in values or default_values:
        point = measure(index, queries, query_ids, truth, k, param, value, exclude, latency_queries, rescore)
        points.append(point)
        if full:
            continue
        if point.recall >= target_recall:
            after_target += 1
        if point.recall >= 1.0 or after_target > 2:
            break
    return param, points


def choose(points: list[OperatingPoint], target_recall: float) -> tuple[OperatingPoint | None, bool]:
    """The smallest knob value meeting the target (search cost grows with it), else the best recall."""
    if not points:
        return None, False
    meeting = [p for p in points if p.recall >= target_recall]
    if meeting:
        return min(meeting, key=lambda p: p.value), True
    return max(points, key=lambda p: (p.recall, -p.value)), False


def sample_query_ids(all_ids: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A seeded sample of `count` ids (all of them when there are fewer), sorted."""
    if len(all_ids) <= count:
        return np.sort(all_ids)
    return np.sort(np.random.default_rng(seed).choice(all_ids, size=count, replace=False))


def measure_collection(
    index: VectorIndex,
    catalog: Catalog,
    factory: str,
    metric: str,
    target_recall: float | None = None,
    k: int = 10,
    queries: int | None = None,
    seed: int = 0,
    latency_queries: int = LATENCY_QUERIES,
    full: bool = False,
    rerank_factor: int = 1,
) -> TuneResult:
    """Measure `index` on a seeded sample of the catalog's own stored embeddings; choose, store nothing.

    With `rerank_factor` > 1 (the plan re-ranks with the catalog's vectors), recall is measured after re-ranking.

    InvalidArgumentError on bad arguments or a collection of fewer than 2 images.
    """
    target_recall = DEFAULT_TARGET_RECALL if target_recall is None else target_recall
    queries = DEFAULT_QUERIES if queries is None else queries
    if not 0.0 < target_recall <= 1.0:
        raise InvalidArgumentError(f"the target recall must be in (0, 1], not {target_recall}", "target_recall")
    if k < 1:
        raise InvalidArgumentError(f"recall is measured at k >= 1, not {k}", "k")
    if queries < 1:
        raise InvalidArgumentError(f"tuning needs at least 1 query, not {queries}", "queries")
    all_ids = catalog.embedding_ids()
    if len(all_ids) < 2:
        raise InvalidArgumentError("the collection needs at least 2 indexed images to tune its search")
    k = min(k, len(all_ids) - 1)
    query_ids = sample_query_ids(all_ids, queries, seed)
    param, _ = sweep_values(index)
    if not param:
        return TuneResult(factory, len(all_ids), k, len(query_ids), target_recall, "")
    vectors = np.stack([catalog.require_embedding(int(i)) for i in query_ids])
    truth = exact_neighbours(catalog.iter_embeddings(), vectors, query_ids, k, metric)
    param, points = tune_index(
        index,
        vectors,
        query_ids,
        truth,
        k,
        target_recall,
        catalog.tombstones(),
        latency_queries=latency_queries,
        full=full,
        rescore=(rerank_factor, partial(rerank, catalog)) if rerank_factor > 1 else None,
    )
    chosen, met = choose(points, target_recall)
    return TuneResult(factory, len(all_ids), k, len(query_ids), target_recall, param, points, chosen, met)
