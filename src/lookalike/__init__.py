"""lookalike: find the images that look like this one.

import lookalike
with lookalike.Collection.create("photos.idx") as collection:
    collection.add_folder("~/Pictures")
    for hit in collection.search(["query.jpg"], k=5)[0].hits:
        print(hit.score, hit.path)

Names are imported on first use, so `import lookalike.cli` (and `lookalike --help`) loads neither
Faiss nor the embedder's frameworks.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Collection": "collection",
    "CollectionInfo": "info",
    "DEFAULT_EMBEDDER": "embedders",
    "embedder_names": "embedders",
    "load_embedder": "embedders",
    "KINDS": "planner",
    "IndexPlan": "planner",
    "plan_index": "planner",
    "IngestReport": "ingest",
    "Hit": "search",
    "Query": "search",
    "QueryResult": "search",
    "LiveCollection": "snapshot",
    "BusyError": "errors",
    "CatalogWriteError": "errors",
    "CollectionNotFoundError": "errors",
    "CorruptCatalogError": "errors",
    "CorruptError": "errors",
    "CorruptIndexError": "errors",
    "EmbedderMismatchError": "errors",
    "EmbedderUnavailableError": "errors",
    "ImageDecodeError": "errors",
    "IndexNotFoundError": "errors",
    "IndexSpecError": "errors",
    "InvalidArgumentError": "errors",
    "LookalikeError": "errors",
    "NotFoundError": "errors",
    "NotIndexedError": "errors",
    "SchemaVersionError": "errors",
    "StorageError": "errors",
    "UnknownEmbedderError": "errors",
}

__all__ = [
    "BusyError",
    "CatalogWriteError",
    "Collection",
    "CollectionInfo",
    "CollectionNotFoundError",
    "CorruptCatalogError",
    "CorruptError",
    "CorruptIndexError",
    "DEFAULT_EMBEDDER",
    "EmbedderMismatchError",
    "EmbedderUnavailableError",
    "Hit",
    "ImageDecodeError",
    "IndexNotFoundError",
    "IndexPlan",
    "IndexSpecError",
    "IngestReport",
    "InvalidArgumentError",
    "KINDS",
    "LiveCollection",
    "LookalikeError",
    "NotFoundError",
    "NotIndexedError",
    "Query",
    "QueryResult",
    "SchemaVersionError",
    "StorageError",
    "UnknownEmbedderError",
    "__version__",
    "embedder_names",
    "load_embedder",
    "plan_index",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .collection import Collection
    from .embedders import DEFAULT_EMBEDDER, embedder_names, load_embedder
    from .errors import (
        BusyError,
        CatalogWriteError,
        CollectionNotFoundError,
        CorruptCatalogError,
        CorruptError,
        CorruptIndexError,
        EmbedderMismatchError,
        EmbedderUnavailableError,
        ImageDecodeError,
        IndexNotFoundError,
        IndexSpecError,
        InvalidArgumentError,
        LookalikeError,
        NotFoundError,
        NotIndexedError,
        SchemaVersionError,
        StorageError,
        UnknownEmbedderError,
    )
    from .info import CollectionInfo
    from .ingest import IngestReport
    from .planner import KINDS, IndexPlan, plan_index
    from .search import Hit, Query, QueryResult
    from .snapshot import LiveCollection
