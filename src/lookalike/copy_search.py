"""The accurate search: several views of the query, a verified shortlist, and calibrated copy scores.

The fast search embeds the whole query once and returns the nearest images. The accurate search
(`mode="accurate"` of `Collection.search`) answers "where is the original of this picture?":

1. the query is decoded with enough pixels for local features (`DECODE_SIDE`), and `regions.propose_views`
   cuts it into views (the whole picture, turns, mirror, grid tiles, rectangles found in it);
2. every view is one vector of one `search.Query`; the index searches all of them in one batch and
   `search.fuse_views` keeps each collection image's best cosine over the views;
3. `VerifyShortlist`, a `search.Stage`, matches local features of the query with those of the first
   `SHORTLIST` candidates (extracted from their files now: storing them at ingest was measured to cost
   far more ingest time than it saves per search, see docs/benchmarks.md), re-ranks verified candidates
   first and gives every hit a calibrated copy score, `copy` when it reaches `verify.COPY_THRESHOLD`.

`Hit.score` stays the fused cosine similarity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .catalog import Catalog
from .embedders import Embedder
from .errors import ImageDecodeError
from .images import open_image, open_image_file
from .regions import Box, propose_views
from .search import Evidence, Fraction, Hit, Query, QueryResult
from .verify import (
    COPY_THRESHOLD,
    FEATURE_SIDE,
    INLIER_MIDPOINT,
    LocalFeatures,
    Verification,
    extract_features,
    rerank,
    verify_shortlist,
)

if TYPE_CHECKING:
    from .collection import Collection

SHORTLIST = 10  # candidates verified per query: the original is among the first 10 fused for most hard copies
DECODE_SIDE = FEATURE_SIDE  # queries and candidates decode with sides of at least this: the features need detail
QUERY_CHUNK = 16  # file queries searched per index batch; each holds its decoded picture until it is verified
DRAWN_MATCHES = 40  # inlier pairs an explanation carries: enough to see the mapping, few enough to read


@dataclass(frozen=True)
class ViewedQuery(Query):
    """A query embedded view by view, with the decoded picture the views were cut from."""

    picture: Image.Image | None = None
    kinds: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()


def open_picture_file(path: str, max_megapixels: float | None = None) -> Image.Image:
    """A query or candidate file decoded with enough pixels for views and local features (else ImageDecodeError)."""
    return open_image_file(path, min_size=DECODE_SIDE, max_megapixels=max_megapixels)


def open_picture_bytes(data: bytes, name: str, max_megapixels: float | None = None) -> Image.Image:
    """An uploaded query decoded as `open_picture_file` decodes a file."""
    return open_image(data, name, min_size=DECODE_SIDE, max_megapixels=max_megapixels)


def view_query(
    picture: Image.Image, label: str, source: str | bytes | None, embedder: Embedder, query_id: int | None = None
) -> ViewedQuery:
    """The query with one embedded vector per proposed view, the whole picture first."""
    views = propose_views(picture, embedder.input_size)
    vectors = embedder.embed(np.stack([view.pixels for view in views]))
    return ViewedQuery(
        label,
        np.asarray(vectors, dtype=np.float32),
        source,
        query_id,
        picture,
        tuple(view.kind for view in views),
        tuple(view.box for view in views),
    )


def search_accurately(
    collection: Collection,
    queries: Sequence[Query],
    k: int,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> list[QueryResult]:
    """Search the views of every query in one batch, then verify each query's shortlist."""
    verifier = VerifyShortlist(collection.catalog, k, max_megapixels=collection.max_megapixels)
    # Every image of the fused first SHORTLIST is in the first SHORTLIST of one of its views, so searching
    # each view for max(k, SHORTLIST) loses none of the shortlist.
    results = collection.search_queries(queries, max(k, SHORTLIST), nprobe, ef_search, extra_stages=[verifier])
    return [replace(result, hits=result.hits[:k]) for result in results]


class VerifyShortlist:
    """The stage that verifies the first candidates geometrically, re-ranks and scores every hit as a copy or not.

    Keeps the first `k` hits of the new order. Candidate files that can no longer be read are left unverified.
    """

    def __init__(
        self, catalog: Catalog, k: int, shortlist: int = SHORTLIST, max_megapixels: float | None = None
    ) -> None:
        self.catalog = catalog
        self.k = k
        self.shortlist = shortlist
        self.max_megapixels = max_megapixels

    def __call__(self, query: Query, hits: list[Hit]) -> list[Hit]:
        picture = self._picture_of(query)
        checks: list[Verification] = []
        sizes: dict[int, tuple[int, int]] = {}  # each verified candidate's picture size, to place its matches
        if picture is not None and hits:
            checks = verify_shortlist(picture, self._candidate_features(hits, sizes), min(self.shortlist, len(hits)))
        order = rerank([hit.score for hit in hits], checks)[: self.k]
        size = picture.size if picture is not None else (1, 1)
        return [
            replace(
                hits[position],
                copy_score=score,
                copy=score >= COPY_THRESHOLD,
                evidence=self._evidence(
                    query,
                    hits[position],
                    checks[position] if position < len(checks) else None,
                    size,
                    sizes.get(position, (1, 1)),
                ),
            )
            for position, score in order
        ]

    def _picture_of(self, query: Query) -> Image.Image | None:
        """The query's decoded picture: carried by a ViewedQuery, else decoded from its source (None if it has none)."""
        if isinstance(query, ViewedQuery) and query.picture is not None:
            return query.picture
        if isinstance(query.source, bytes):
            return open_picture_bytes(query.source, query.label, self.max_megapixels)
        if isinstance(query.source, str):
            return open_picture_file(query.source, self.max_megapixels)
        return None

    def _candidate_features(
        self, hits: list[Hit], sizes: dict[int, tuple[int, int]]
    ) -> Callable[[int], LocalFeatures | None]:
        def features(position: int) -> LocalFeatures | None:
            try:
                candidate = open_picture_file(hits[position].path, self.max_megapixels)
                sizes[position] = candidate.size
                return extract_features(candidate)
            except (ImageDecodeError, OSError):
                return None  # moved or damaged since it was indexed: it stays unverified

        return features

    def _evidence(
        self,
        query: Query,
        hit: Hit,
        check: Verification | None,
        size: tuple[int, int],
        hit_size: tuple[int, int],
    ) -> Evidence:
        view = self._closest_view(query, hit)
        kinds = query.kinds if isinstance(query, ViewedQuery) else ()
        boxes = query.boxes if isinstance(query, ViewedQuery) else ()
        kind = kinds[view] if view < len(kinds) else "whole"
        box = _fraction(boxes[view], size) if view < len(boxes) else (0.0, 0.0, 1.0, 1.0)
        if check is None:
            return Evidence(kind, box, 0, False)
        points = check.query_points
        if check.inliers < INLIER_MIDPOINT or not len(points):  # a chance fit covers no real region
            return Evidence(kind, box, check.inliers, check.mirrored)
        region = _fraction(
            (
                float(points[:, 0].min()),
                float(points[:, 1].min()),
                float(points[:, 0].max()),
                float(points[:, 1].max()),
            ),
            size,
        )
        matches = _drawn_matches(points, check.candidate_points, size, hit_size)
        return Evidence(kind, box, check.inliers, check.mirrored, region, verified=True, matches=matches)

    def _closest_view(self, query: Query, hit: Hit) -> int:
        """The view of the query whose vector is nearest the hit's stored embedding (the one fusion kept)."""
        if len(query.vectors) == 1:
            return 0
        stored = self.catalog.embedding(hit.id)
        return 0 if stored is None else int(np.argmax(query.vectors @ np.asarray(stored, dtype=np.float32)))


def _drawn_matches(
    query_points: np.ndarray, hit_points: np.ndarray, size: tuple[int, int], hit_size: tuple[int, int]
) -> tuple[tuple[float, float, float, float], ...]:
    """Up to DRAWN_MATCHES inlier pairs, spread over the list, as fractions of each picture's width and height."""
    picked = np.unique(np.linspace(0, len(query_points) - 1, min(DRAWN_MATCHES, len(query_points))).astype(int))
    scale = np.array([size[0], size[1], hit_size[0], hit_size[1]], dtype=np.float64).clip(min=1)
    pairs = np.hstack([query_points[picked], hit_points[picked]]) / scale
    rounded = pairs.clip(0.0, 1.0).round(4).tolist()
    return tuple((qx, qy, hx, hy) for qx, qy, hx, hy in rounded)


def _fraction(box: tuple[float, float, float, float], size: tuple[int, int]) -> Fraction:
    width, height = max(1, size[0]), max(1, size[1])
    left, top, right, bottom = box
    return (
        round(left / width, 4),
        round(top / height, 4),
        round(min(right / width, 1.0), 4),
        round(min(bottom / height, 1.0), 4),
    )


__all__ = [
    "DECODE_SIDE",
    "SHORTLIST",
    "VerifyShortlist",
    "ViewedQuery",
    "open_picture_bytes",
    "open_picture_file",
    "search_accurately",
    "view_query",
]
