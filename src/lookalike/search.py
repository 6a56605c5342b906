"""Search results: turning Faiss (score, id) rows into hits that name catalog rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .catalog import Catalog


@dataclass(frozen=True)
class Hit:
    """One search result: a catalog image and its similarity to the query (cosine, higher is closer)."""

    id: int
    path: str
    score: float

    def to_dict(self) -> dict:
        """The JSON shape shared by the CLI and the HTTP API."""
        return {"id": self.id, "path": self.path, "score": round(float(self.score), 6)}


@dataclass(frozen=True)
class QueryResult:
    """The hits for one query, best first."""

    query: str
    hits: list[Hit] = field(default_factory=list)
    query_id: int | None = None  # set when the query is an indexed image

    def to_dict(self) -> dict:
        """`{"query": ..., "results": [...]}`, the contract of `lookalike search --json`."""
        return {"query": self.query, "results": [hit.to_dict() for hit in self.hits]}


def hits_from_rows(catalog: Catalog, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
    """Map each row of Faiss output to hits, dropping empty slots and ids no longer in the catalog."""
    paths = catalog.indexed_paths({int(i) for i in ids.ravel() if i >= 0})
    return [
        [Hit(int(i), paths[int(i)], float(s)) for s, i in zip(row_scores, row_ids) if int(i) in paths]
        for row_scores, row_ids in zip(scores, ids)
    ]


__all__ = ["Hit", "QueryResult", "hits_from_rows"]
