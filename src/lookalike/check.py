"""Checking a collection's files and repairing what can be repaired (`lookalike check`).

Every file of a collection is verified in turn: the catalog (SQLite's own integrity check and the
schema version), each stored embedding (length, finite, unit norm), the Faiss file (full checksum
against what the catalog recorded, then parsed), the manifest, and scratch files of interrupted
writes, and shard files of embeddings that no image refers to. With `repair`: damaged embeddings
(and every embedding of a missing or damaged shard file) are dropped and their images queued for
re-embedding by the next ingest (their rows say why), the index is rebuilt from the catalog, the
manifest rewritten, and scratch files and unreferenced shard files removed. A damaged catalog
cannot be repaired from inside: the report says so.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import CATALOG_FILE, Catalog
from .errors import CorruptError, LookalikeError
from .index_store import IndexStore, load_verified
from .settings import MANIFEST_FILE, read_settings
from .storage import FolderLock, remove_stale_scratch, scratch_files
from .vector_integrity import intact_rows, sound_vectors

REEMBED_REASON = "stored embedding damaged: embedded again by the next index run"


@dataclass(frozen=True)
class Finding:
    """The verdict on one part of a collection."""

    part: str  # catalog, embeddings, index, manifest, temp files, shard files
    healthy: bool
    detail: str
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"part": self.part, "healthy": self.healthy, "detail": self.detail, "repaired": self.repaired}


@dataclass
class CheckReport:
    """Every finding of one check; healthy when each part is healthy or was repaired."""

    folder: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(f.healthy or f.repaired for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "healthy": self.healthy, "findings": [f.to_dict() for f in self.findings]}


def check_collection(folder: str | Path, repair: bool = False) -> CheckReport:
    """Verify every file of the collection in `folder`; with `repair`, mend what can be mended."""
    folder = Path(folder)
    report = CheckReport(str(folder))
    leftovers = [(path, path.stat().st_size) for path in scratch_files(folder)]  # before a repair's lock removes them
    try:
        catalog = Catalog.open(folder)
    except CorruptError as error:
        report.findings.append(Finding("catalog", False, f"{error}"))
        return report
    try:
        with FolderLock(folder).hold() if repair else contextlib.nullcontext():
            report.findings.append(_check_catalog(catalog))
            if not report.findings[-1].healthy:
                return report
            report.findings.append(_check_embeddings(catalog, repair))
            report.findings.append(_check_index(folder, catalog, repair))
            report.findings.append(_check_manifest(folder, catalog, repair))
            report.findings.append(_check_scratch(folder, leftovers, repair))
            report.findings.append(_check_shard_files(catalog, repair))
    finally:
        catalog.close()
    return report


def _check_catalog(catalog: Catalog) -> Finding:
    result = [row[0] for row in catalog.connection.execute("PRAGMA integrity_check").fetchall()]
    if result != ["ok"]:
        return Finding("catalog", False, f"{CATALOG_FILE}: " + "; ".join(str(r) for r in result[:3]))
    return Finding("catalog", True, f"{CATALOG_FILE}: integrity ok, {catalog.count()} images")


def _damaged_embedding_ids(catalog: Catalog, dim: int) -> list[int]:
    damaged: list[int] = []
    query = (
        "SELECT e.image_id, e.vector, c.crc FROM embeddings e LEFT JOIN embedding_checksums c"
        " ON c.image_id = e.image_id WHERE e.image_id > ? ORDER BY e.image_id LIMIT ?"
    )
    for rows in catalog.pages(query, 0, 4096):
        intact = intact_rows(rows)
        right_size = [row for row, ok in zip(rows, intact) if ok and len(row[1]) == dim * 4]
        damaged += [row[0] for row, ok in zip(rows, intact) if not ok or len(row[1]) != dim * 4]
        if right_size:
            vectors = np.stack([np.frombuffer(row[1], dtype=np.float32) for row in right_size])
            damaged += [row[0] for row, ok in zip(right_size, sound_vectors(vectors, dim * 4)) if not ok]
    return damaged + catalog.damaged_shard_embeddings(dim)


def _check_embeddings(catalog: Catalog, repair: bool) -> Finding:
    settings = read_settings(catalog)
    damaged = _damaged_embedding_ids(catalog, settings.dim)
    total = catalog.count_embeddings()
    if not damaged:
        return Finding("embeddings", True, f"{total} stored embeddings of {settings.dim} dimensions, checksums ok")
    detail = f"{len(damaged)} of {total} stored embeddings are damaged (ids {', '.join(map(str, damaged[:5]))}" + (
        ", ...)" if len(damaged) > 5 else ")"
    )
    unreadable = catalog.unreadable_shard_files()
    if unreadable:
        detail += f"; shard files missing or damaged: {', '.join(unreadable)}"
    if repair:
        catalog.queue_for_reembedding(damaged, REEMBED_REASON)
        detail += "; dropped, to be embedded again by the next index run"
    return Finding("embeddings", False, detail, repaired=repair)


def _check_index(folder: Path, catalog: Catalog, repair: bool) -> Finding:
    store = IndexStore(folder, catalog)
    settings = read_settings(catalog)
    if settings.index_state is None:
        problem = "no index file recorded yet"
    else:
        try:
            index = load_verified(store.path, settings.index_state, settings.metric)
            return Finding("index", True, f"{store.path.name}: checksum ok, {index.count} vectors")
        except LookalikeError as error:
            problem = str(error)
    if repair:
        index = store.rebuild()
        return Finding("index", False, f"{problem}; rebuilt from the catalog ({index.count} vectors)", repaired=True)
    return Finding("index", False, problem)


def _check_manifest(folder: Path, catalog: Catalog, repair: bool) -> Finding:
    path = folder / MANIFEST_FILE
    settings = read_settings(catalog)
    try:
        manifest = json.loads(path.read_text())
        matches = manifest["embedder"]["id"] == settings.embedder_id and manifest["embedder"]["dim"] == settings.dim
        problem = "" if matches else "describes another embedder than the catalog"
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"unreadable ({type(error).__name__})"
    if not problem:
        return Finding("manifest", True, f"{MANIFEST_FILE}: matches the catalog")
    if repair:
        IndexStore(folder, catalog).write_manifest()
    return Finding("manifest", False, f"{MANIFEST_FILE}: {problem}", repaired=repair)


def _check_shard_files(catalog: Catalog, repair: bool) -> Finding:
    """Shard files no image's vector lives in: a Ray ingest killed before committing a shard, or every image of
    the shard removed. Harmless; a repair deletes them (it holds the folder's lock, so no ingest is writing one)."""
    unreferenced = catalog.unreferenced_shard_files()
    if not unreferenced:
        return Finding("shard files", True, f"{catalog.shard_files.bytes_on_disk()[0]} files of embeddings, all in use")
    on_disk = [catalog.shard_files.folder / name for name in unreferenced]
    size = sum(path.stat().st_size for path in on_disk if path.is_file())
    detail = f"{len(unreferenced)} files of embeddings no image refers to ({size} bytes)"
    if repair:
        catalog.remove_shard_files(unreferenced)
        detail += "; removed"
    return Finding("shard files", False, detail, repaired=repair)


def _check_scratch(folder: Path, leftovers: list[tuple[Path, int]], repair: bool) -> Finding:
    if not leftovers:
        return Finding("temp files", True, "none")
    size = sum(size for _, size in leftovers)
    detail = f"{len(leftovers)} left by interrupted writes ({size} bytes)"
    if repair:
        remove_stale_scratch(folder)
    return Finding("temp files", False, detail, repaired=repair)
