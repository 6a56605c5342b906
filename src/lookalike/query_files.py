"""Image files as queries: read, embedded for the search mode asked, and unreadable ones reported.

`Collection.search` calls this module. It decides what each query's vectors are (a stored embedding, one
vector of the whole picture, or the views of copy_search.py) and leaves the searching itself to
`Collection.search_queries` (fast) or `copy_search.search_accurately` (accurate).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .catalog import Catalog, ImageRecord
from .errors import ImageDecodeError
from .images import decode_file
from .search import Query, QueryResult

if TYPE_CHECKING:
    from .collection import Collection

OnError = Callable[[str, str], None]


def search_files(
    collection: Collection,
    labels: list[str],
    k: int,
    nprobe: int | None,
    ef_search: int | None,
    on_error: OnError | None,
    accurate: bool,
) -> list[QueryResult]:
    """Search with image files, in order. The fast search runs every query in one index batch; the accurate
    one in batches of copy_search.QUERY_CHUNK, since each query holds its decoded picture until it is verified."""
    chunk = len(labels)
    if accurate:
        from .copy_search import QUERY_CHUNK

        chunk = QUERY_CHUNK
    results: list[QueryResult] = []
    for start in range(0, len(labels), max(1, chunk)):
        results += _search_chunk(collection, labels[start : start + chunk], k, nprobe, ef_search, on_error, accurate)
    return results


def _search_chunk(
    collection: Collection,
    labels: list[str],
    k: int,
    nprobe: int | None,
    ef_search: int | None,
    on_error: OnError | None,
    accurate: bool,
) -> list[QueryResult]:
    """Read and embed each file query, then search the readable ones in one batch."""
    prepared: dict[int, Query] = {}
    errors: dict[int, str] = {}
    for row, label in enumerate(labels):
        try:
            prepared[row] = file_query(collection, label, accurate)
        except ImageDecodeError as error:
            if on_error is None:
                raise
            on_error(label, error.reason)
            errors[row] = error.reason
    readable = sorted(prepared)
    found = [prepared[row] for row in readable]
    if accurate:
        from .copy_search import search_accurately

        answers = search_accurately(collection, found, k, nprobe, ef_search)
    else:
        answers = collection.search_queries(found, k, nprobe, ef_search)
    answered = dict(zip(readable, answers))
    return [answered.get(row) or QueryResult(labels[row], error=errors[row]) for row in range(len(labels))]


def file_query(collection: Collection, label: str, accurate: bool) -> Query:
    """One file as a query: its stored embedding (fast, indexed and unchanged), its views, or its whole picture."""
    record = indexed_record_for_file(collection.catalog, label)
    if not accurate and record is not None:
        vector = collection.catalog.embedding(record.id)
        if vector is not None:
            return Query(label, np.asarray(vector, dtype=np.float32)[None], label, record.id)
    if not os.path.isfile(label):
        raise ImageDecodeError(label, "not a file")
    embedder = collection.embedder()
    if accurate:
        from .copy_search import open_picture_file, view_query

        picture = open_picture_file(label, collection.max_megapixels)
        return view_query(picture, label, label, embedder, record.id if record is not None else None)
    pixels = decode_file(label, embedder.input_size, max_megapixels=collection.max_megapixels).pixels
    return Query(label, embedder.embed(pixels[None]), label)


def indexed_record_for_file(catalog: Catalog, path: str) -> ImageRecord | None:
    """The catalog row of the file at `path` if it is indexed and unchanged since (same size and mtime)."""
    record = catalog.image_by_path(os.path.abspath(path))
    if record is None or record.status != "indexed" or not record.file_unchanged():
        return None
    return record


__all__ = ["file_query", "indexed_record_for_file", "search_files"]
