"""The searching part of the collection facade: image files, uploads, stored images and vectors as queries.

`Collection` inherits these methods. Every search ends in `search_queries`: queries of one or more views each
go to the index in one batch, views are fused per image, then the stages run on each query's hits. The
accurate mode (copy_search.py) and image files as queries (query_files.py) build on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from .images import decode_bytes
from .rerank import rerank, rerank_factor
from .search import (
    Query,
    QueryResult,
    Stage,
    check_ids,
    check_k,
    check_mode,
    fuse_views,
    hits_from_rows,
    run_stages,
)

if TYPE_CHECKING:
    from .catalog import Catalog
    from .collection import Collection
    from .embedders import Embedder
    from .index import VectorIndex
    from .settings import Settings


class Searching:
    """Searching a collection (a part of `Collection`)."""

    catalog: Catalog
    stages: list[Stage]
    max_megapixels: float | None
    _search_cache: tuple[tuple[int, int], dict, np.ndarray] | None

    @property
    def settings(self) -> Settings:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def embedder(self) -> Embedder:
        raise NotImplementedError

    def index(self) -> VectorIndex:
        raise NotImplementedError

    def search(
        self,
        queries: Sequence[str | os.PathLike],
        k: int = 10,
        nprobe: int | None = None,
        ef_search: int | None = None,
        on_error: Callable[[str, str], None] | None = None,
        mode: str = "accurate",
    ) -> list[QueryResult]:
        """Search with image files.

        `mode="accurate"` (see copy_search.py) embeds several views of each query, verifies the first candidates
        and gives every hit a copy score; `mode="fast"` embeds the whole picture once, and files already in the
        catalog (unchanged) reuse their stored embedding. A query that cannot be read raises ImageDecodeError,
        unless `on_error(query, reason)` is given: then it is reported there, its result carries the reason in
        `error`, and the other queries are answered.
        """
        check_k(k)
        labels = [os.fspath(q) for q in queries]
        from .query_files import search_files

        return search_files(cast("Collection", self), labels, k, nprobe, ef_search, on_error, check_mode(mode))

    def search_image_bytes(
        self,
        data: bytes,
        name: str = "upload",
        k: int = 10,
        nprobe: int | None = None,
        ef_search: int | None = None,
        mode: str = "accurate",
    ) -> QueryResult:
        """Search with an image given as bytes (an upload), in either mode (see `search`)."""
        check_k(k)
        if not check_mode(mode):
            return self.search_queries([Query(name, self.embed_image_bytes(data, name), data)], k, nprobe, ef_search)[0]
        from .copy_search import open_picture_bytes, search_accurately, view_query

        query = view_query(open_picture_bytes(data, name, self.max_megapixels), name, data, self.embedder())
        return search_accurately(cast("Collection", self), [query], k, nprobe, ef_search)[0]

    def embed_image_bytes(self, data: bytes, name: str = "upload") -> np.ndarray:
        """The embedding of an image given as bytes, as a (1, dim) array (ImageDecodeError if it is none)."""
        embedder = self.embedder()
        return embedder.embed(decode_bytes(data, name, embedder.input_size, self.max_megapixels).pixels[None])

    def search_ids(
        self, ids: Sequence[int], k: int = 10, nprobe: int | None = None, ef_search: int | None = None
    ) -> list[QueryResult]:
        """Search with images already in the collection, by catalog id, without re-embedding."""
        check_k(k)
        records = self.catalog.images_by_id(check_ids(ids))
        vectors = [self.catalog.require_embedding(int(image_id)) for image_id in ids]
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
        query_ids = query_ids or [None] * len(labels)
        queries = [Query(label, vectors[row : row + 1], None, query_ids[row]) for row, label in enumerate(labels)]
        return self.search_queries(queries, k, nprobe, ef_search)

    def search_queries(
        self,
        queries: Sequence[Query],
        k: int = 10,
        nprobe: int | None = None,
        ef_search: int | None = None,
        extra_stages: Sequence[Stage] = (),
    ) -> list[QueryResult]:
        """Search with queries of one or more views each, in one index batch; then the stages, per query.

        `extra_stages` run before the collection's own `stages`, for this call only.
        """
        check_k(k)
        defaults, tombstones = self._search_settings()
        if len(queries) == 1:  # the common case, kept cheap: one query, usually one view
            stacked = queries[0].vectors
        else:
            stacked = np.concatenate([q.vectors for q in queries]) if queries else np.zeros((0, self.dim), np.float32)
        factor = rerank_factor(self.settings.index_plan.params if self.settings.index_plan else None)
        scores, ids = self.index().search(
            stacked,
            k * factor,
            nprobe=nprobe or defaults.get("nprobe"),
            ef_search=ef_search or defaults.get("efSearch"),
            exclude=tombstones,
        )
        if factor > 1:  # a compressed index's candidates, re-scored exactly with the catalog's vectors
            scores, ids = rerank(self.catalog, stacked, ids, k)
        if len(stacked) != len(queries):
            scores, ids = fuse_views(scores, ids, [len(query.vectors) for query in queries], k)
        stages = [*extra_stages, *self.stages]
        results = []
        for query, hits in zip(queries, hits_from_rows(self.catalog, scores, ids)):
            if stages:
                hits = run_stages(stages, query, hits)[:k]
            results.append(QueryResult(query.label, hits, query.query_id))
        return results

    def _search_settings(self) -> tuple[dict, np.ndarray]:
        """Stored search defaults and tombstones, re-read only when the catalog changed since the last search."""
        marker = self.catalog.change_marker()
        if self._search_cache is None or self._search_cache[0] != marker:
            self._search_cache = (marker, self.settings.search_defaults, self.catalog.tombstones())
        return self._search_cache[1], self._search_cache[2]
