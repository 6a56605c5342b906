"""What `lookalike info` and `GET /api/stats` show: a collection's counts, settings and sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .catalog import CATALOG_FILE, Catalog
from .embedding_shards import SHARD_FOLDER
from .index import INDEX_FILE
from .index_store import IndexStore
from .ondisk import data_files
from .settings import MANIFEST_FILE, read_settings
from .storage import scratch_files


@dataclass(frozen=True)
class CollectionInfo:
    """Counts and settings of a collection: `lookalike info --json` and `GET /api/stats` print `to_dict()`."""

    folder: str
    images: int
    skipped: int
    tombstones: int
    embedder: str
    dim: int
    metric: str
    index_kind: str
    index_factory: str
    index_vectors: int
    search_params: dict
    bytes_on_disk: dict
    skipped_files: list[tuple[str, str]]
    temp_files: int = 0  # scratch files of interrupted writes (removed by the next update)
    embedding_shard_files: int = 0  # .npy files of a Ray ingest's embeddings (their bytes: bytes_on_disk)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of a collection's numbers, one for every shell."""
        data = asdict(self)
        data["skipped_files"] = [{"path": p, "reason": r} for p, r in self.skipped_files]
        return data


def describe(folder: Path, catalog: Catalog, store: IndexStore) -> CollectionInfo:
    """The numbers of the collection in `folder`."""
    settings = read_settings(catalog)
    plan = settings.index_plan or store.planned()
    sizes = {}
    for name in (INDEX_FILE, CATALOG_FILE, f"{CATALOG_FILE}-wal", MANIFEST_FILE):
        path = folder / name
        if path.exists():
            sizes[name] = path.stat().st_size
    for path in data_files(folder):  # an index merged on disk keeps its inverted lists here
        sizes[path.name] = path.stat().st_size
    shard_files, shard_bytes = catalog.shard_files.bytes_on_disk()
    if shard_files:
        sizes[SHARD_FOLDER] = shard_bytes
    skipped = [(r.path, r.error or "") for r in catalog.skipped_images()]
    return CollectionInfo(
        folder=str(folder),
        images=catalog.count("indexed"),
        skipped=len(skipped),
        tombstones=len(catalog.tombstones()),
        embedder=settings.embedder_id,
        dim=settings.dim,
        metric=settings.metric,
        index_kind=plan.kind,
        index_factory=plan.factory,
        index_vectors=settings.index_state.count if settings.index_state else 0,
        search_params=settings.search_defaults,
        bytes_on_disk=sizes,
        skipped_files=skipped,
        temp_files=len(scratch_files(folder)),
        embedding_shard_files=shard_files,
    )
