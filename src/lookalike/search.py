"""Search results and the search pipeline's seams: queries with several views, fusion, re-ranking stages.

A query reaches the index as one or more vectors (its *views*: the whole picture today; regions,
turns and mirrors of it once a region stage proposes them). The index returns (score, vector id)
rows; vector ids are image ids today, and `fuse_views` keeps each image's best score over every
view of the query, so a stage that adds views or an index holding several vectors per image
changes nothing downstream. Stages then receive the query (with where its pixels come from) and
its hits, and may re-rank them (geometric verification does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .catalog import Catalog
from .errors import InvalidArgumentError, NotIndexedError

MAX_K = 10_000  # results per query, for every shell
MAX_ID = 2**63 - 1  # catalog ids are SQLite integers; anything larger names no image


def check_k(k: int) -> None:
    """InvalidArgumentError unless 1 <= k <= MAX_K."""
    if not 1 <= k <= MAX_K:
        raise InvalidArgumentError(f"the number of results must be between 1 and {MAX_K}, not {k}", "k")


MODES = ("accurate", "fast")  # see copy_search.py; "fast" is one vector of the whole picture, no verification


def check_mode(mode: str) -> bool:
    """True for the accurate search, False for the fast one; InvalidArgumentError for anything else."""
    if mode not in MODES:
        raise InvalidArgumentError(f"the search mode must be one of {', '.join(MODES)}, not {mode!r}", "mode")
    return mode == "accurate"


def check_ids(ids: Sequence[int]) -> Sequence[int]:
    """`ids`, or NotIndexedError for one no catalog can hold (below 1, or beyond SQLite's integers)."""
    for image_id in ids:
        if not 1 <= int(image_id) <= MAX_ID:
            raise NotIndexedError(f"no indexed image has id {image_id}")
    return ids


Fraction = tuple[float, float, float, float]  # left, top, right, bottom as fractions of the query's width, height


@dataclass(frozen=True)
class Evidence:
    """Why a hit ranked where it did in the accurate search: the view that found it and what verified it."""

    view: str  # the kind of the query view closest to the hit (whole, turn90, mirror, grid3, rect, ...)
    box: Fraction  # where that view lies in the query
    inliers: int  # local matches consistent with one homography (0 when the hit was not in the shortlist)
    mirrored: bool  # the matches hold between the query's mirror and the hit
    region: Fraction | None = None  # the part of the query the inliers cover, when verified
    verified: bool = False  # enough inliers to call the match geometric, not chance (see verify.py)
    # Some verified inlier pairs, for drawing: (query x, query y, hit x, hit y), each a fraction of its picture.
    matches: tuple[tuple[float, float, float, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of `evidence` in a hit: boxes as [left, top, right, bottom] fractions."""
        return {
            "view": self.view,
            "box": list(self.box),
            "inliers": self.inliers,
            "verified": self.verified,
            "mirrored": self.mirrored,
            "region": list(self.region) if self.region is not None else None,
            "matches": [list(match) for match in self.matches],
        }


@dataclass(frozen=True)
class Hit:
    """One search result: a catalog image and its similarity to the query (cosine, higher is closer).

    The accurate search adds a calibrated `copy_score` in [0, 1], `copy` (the score reaches the copy threshold)
    and its `evidence`; they stay None from the fast search.
    """

    id: int
    path: str
    score: float
    copy_score: float | None = None
    copy: bool | None = None
    evidence: Evidence | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape shared by the CLI and the HTTP API (copy fields only when they were computed)."""
        shape: dict[str, Any] = {"id": self.id, "path": self.path, "score": round(float(self.score), 6)}
        if self.copy_score is not None:
            shape["copy"] = bool(self.copy)
            shape["copy_score"] = round(float(self.copy_score), 6)
        if self.evidence is not None:
            shape["evidence"] = self.evidence.to_dict()
        return shape


@dataclass(frozen=True)
class QueryResult:
    """The hits for one query, best first."""

    query: str
    hits: list[Hit] = field(default_factory=list)
    query_id: int | None = None  # set when the query is an indexed image
    error: str | None = None  # why the query could not be searched (its hits are then empty)

    def to_dict(self) -> dict[str, Any]:
        """`{"query": ..., "results": [...]}` (or `{"query": ..., "error": ...}`), as `lookalike search --json`."""
        if self.error is not None:
            return {"query": self.query, "error": self.error}
        return {"query": self.query, "results": [hit.to_dict() for hit in self.hits]}


@dataclass(frozen=True)
class Query:
    """One query on its way through the pipeline: its views' vectors and where its pixels come from."""

    label: str
    vectors: np.ndarray  # (views, dim), the whole picture first
    source: str | bytes | None = None  # the file path or the uploaded bytes; None for a stored embedding
    query_id: int | None = None  # set when the query is an indexed image


class Stage(Protocol):
    """A step after the index: sees the query and its hits (best first), returns them re-ranked or filtered."""

    def __call__(self, query: Query, hits: list[Hit]) -> list[Hit]: ...


VectorOwners = Callable[[np.ndarray], np.ndarray]


def fuse_views(
    scores: np.ndarray, ids: np.ndarray, views: Sequence[int], k: int, owners: VectorOwners | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the result rows of each query's views: per image, its best score; the k best images first.

    `scores`/`ids` hold one row per view, the views of query i being the next `views[i]` rows. `owners` maps
    vector ids to image ids (identity when each image has one vector). Returns (len(views), k) arrays padded
    with id -1 and score -inf, as the index returns them.
    """
    out_scores = np.full((len(views), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(views), k), -1, dtype=np.int64)
    start = 0
    for row, count in enumerate(views):
        block_ids = ids[start : start + count].ravel()
        block_scores = scores[start : start + count].ravel()
        start += count
        valid = block_ids >= 0
        images = owners(block_ids[valid]) if owners is not None else block_ids[valid]
        order = np.argsort(-block_scores[valid], kind="stable")
        best: dict[int, float] = {}
        for image, score in zip(images[order], block_scores[valid][order]):
            best.setdefault(int(image), float(score))
        ranked = list(best.items())[:k]
        out_ids[row, : len(ranked)] = [image for image, _ in ranked]
        out_scores[row, : len(ranked)] = [score for _, score in ranked]
    return out_scores, out_ids


def hits_from_rows(catalog: Catalog, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
    """Map each row of Faiss output to hits, dropping empty slots and ids no longer in the catalog."""
    paths = catalog.indexed_paths({int(i) for i in ids.ravel() if i >= 0})
    return [
        [Hit(int(i), paths[int(i)], float(s)) for s, i in zip(row_scores, row_ids) if int(i) in paths]
        for row_scores, row_ids in zip(scores, ids)
    ]


def run_stages(stages: Sequence[Stage], query: Query, hits: list[Hit]) -> list[Hit]:
    """Pass the hits through each stage in turn."""
    for stage in stages:
        hits = stage(query, hits)
    return hits


__all__ = [
    "MAX_ID",
    "MAX_K",
    "MODES",
    "Evidence",
    "Fraction",
    "Hit",
    "Query",
    "QueryResult",
    "Stage",
    "check_ids",
    "check_k",
    "check_mode",
    "fuse_views",
    "hits_from_rows",
    "run_stages",
]
