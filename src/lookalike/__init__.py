"""lookalike: find the photos that look like this one.

import lookalike
with lookalike.Collection.create("photos.idx") as collection:
    collection.add_folder("~/Pictures")
    for hit in collection.search(["query.jpg"], k=5)[0].hits:
        print(hit.score, hit.path)
"""

__version__ = "0.1.0"

from .collection import Collection, CollectionInfo  # noqa: E402
from .embedders import DEFAULT_EMBEDDER, embedder_names, load_embedder  # noqa: E402
from .errors import (  # noqa: E402
    CatalogWriteError,
    CorruptIndexError,
    EmbedderMismatchError,
    EmbedderUnavailableError,
    ImageDecodeError,
    IndexNotFoundError,
    IndexSpecError,
    LookalikeError,
    NotIndexedError,
    SchemaVersionError,
    StorageError,
    UnknownEmbedderError,
)
from .index import KINDS, IndexPlan, plan_index  # noqa: E402
from .ingest import IngestReport  # noqa: E402
from .search import Hit, QueryResult  # noqa: E402

__all__ = [
    "DEFAULT_EMBEDDER",
    "KINDS",
    "CatalogWriteError",
    "Collection",
    "CollectionInfo",
    "CorruptIndexError",
    "EmbedderMismatchError",
    "EmbedderUnavailableError",
    "Hit",
    "ImageDecodeError",
    "IndexNotFoundError",
    "IndexPlan",
    "IndexSpecError",
    "IngestReport",
    "LookalikeError",
    "NotIndexedError",
    "QueryResult",
    "SchemaVersionError",
    "StorageError",
    "UnknownEmbedderError",
    "__version__",
    "embedder_names",
    "load_embedder",
    "plan_index",
]
