"""Copy-detection measures: recall@k, mAP per family, micro-AP, recall at fixed precision, precision at a threshold.

A ranking is a list of (path, score) pairs, best first. Each query has at most
one original; the no-original queries only contribute false positives.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

Ranking = list[tuple[str, float]]


def rank_of(ranking: Ranking, original: str | None) -> int | None:
    """1-based rank of the original, None when absent."""
    for position, (path, _) in enumerate(ranking, start=1):
        if path == original:
            return position
    return None


def per_family(queries: Sequence, rankings: Sequence[Ranking]) -> dict[tuple[str, str], dict[str, float]]:
    """recall@1, recall@10 and mAP (1/rank of the single original) per (tier, family), plus tier and overall rows."""
    groups: dict[tuple[str, str], list[int | None]] = defaultdict(list)
    for query, ranking in zip(queries, rankings):
        if query.original is None:
            continue
        rank = rank_of(ranking, query.original)
        for key in ((query.tier, query.family), (query.tier, "all"), ("all", "all")):
            groups[key].append(rank)
    table = {}
    for key, ranks in groups.items():
        table[key] = {
            "n": len(ranks),
            "r1": float(np.mean([r == 1 for r in ranks])),
            "r10": float(np.mean([r is not None and r <= 10 for r in ranks])),
            "map": float(np.mean([1.0 / r if r else 0.0 for r in ranks])),
        }
    return table


def micro_ap(queries: Sequence, rankings: Sequence[Ranking], per_query: int = 10) -> dict[str, float]:
    """DISC-style micro-AP over the top `per_query` predictions of every query, and recall at 90%/99% precision."""
    predictions = []
    positives = sum(1 for q in queries if q.original is not None)
    for query, ranking in zip(queries, rankings):
        for path, score in ranking[:per_query]:
            predictions.append((score, path == query.original))
    predictions.sort(key=lambda p: -p[0])
    correct = np.cumsum([hit for _, hit in predictions])
    precision = correct / np.arange(1, len(predictions) + 1)
    recall = correct / max(positives, 1)
    hits = np.asarray([hit for _, hit in predictions], dtype=bool)
    ap = float(np.sum(precision[hits]) / max(positives, 1))
    return {"uap": ap, "r@p90": _recall_at(precision, recall, 0.90), "r@p99": _recall_at(precision, recall, 0.99)}


def _recall_at(precision: np.ndarray, recall: np.ndarray, target: float) -> float:
    ok = precision >= target
    return float(recall[ok].max()) if ok.any() else 0.0


def at_threshold(queries: Sequence, rankings: Sequence[Ranking], threshold: float) -> dict[str, float]:
    """Top-1 hits at or above `threshold`: their precision, recall of originals, and the no-original queries' share."""
    called, right, none_called = 0, 0, 0
    originals = sum(1 for q in queries if q.original is not None)
    nones = sum(1 for q in queries if q.original is None)
    for query, ranking in zip(queries, rankings):
        if ranking and ranking[0][1] >= threshold:
            called += 1
            right += ranking[0][0] == query.original
            none_called += query.original is None
    return {
        "precision": right / called if called else 1.0,
        "recall": right / max(originals, 1),
        "none_flagged": none_called / max(nones, 1),
        "nones": nones,
    }


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q)) if len(seconds) else float("nan")
