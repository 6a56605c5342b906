"""A collection's settings: every value it stores besides images and embeddings, typed, in one place.

The values live in the catalog's `meta` table (key -> text; JSON where structured), so they
commit in the same transactions as the rows they describe; `manifest.json` repeats them for
people and other tools, and is rewritten whenever they change. Nothing else reads or writes
`meta` keys: add a setting here, with its key and its codec.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import faiss

from . import __version__
from .catalog import SCHEMA_VERSION, Catalog
from .planner import IndexPlan
from .storage import atomic_write_bytes, file_fingerprint

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class IndexState:
    """What the catalog records of the Faiss file it last wrote, checked before loading it."""

    checksum: str
    count: int
    dim: int
    high_water: int  # every catalog id <= this was added (or has since been tombstoned)
    # The file's identity when the checksum was taken (see storage.file_fingerprint); 0 when not recorded.
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0

    def fingerprint_matches(self, path: Path) -> bool:
        """True when `path` is still the very file whose checksum was recorded (same inode, size, times)."""
        return bool(self.inode) and file_fingerprint(path) == {
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "inode": self.inode,
        }


@dataclass(frozen=True)
class Settings:
    """Everything a collection stores about itself, as typed values."""

    embedder_name: str = ""
    embedder_id: str = ""  # name@weights-hash: a query is only compared with vectors of the same identity
    dim: int = 0
    metric: str = "cosine"
    index_kind: str = "auto"  # as the user asked: a kind name or a factory string
    index_options: dict[str, Any] = field(default_factory=dict)
    index_plan: IndexPlan | None = None  # what the current Faiss file was built from
    index_state: IndexState | None = None  # what the current Faiss file is
    index_trained_count: int = 0  # vectors in the collection when the current plan was built
    search_defaults: dict[str, int] = field(default_factory=dict)  # {"nprobe": n} or {"efSearch": n}, from tune
    search_tuning: dict[str, Any] | None = None  # what the last tune measured
    scanned_roots: list[str] = field(default_factory=list)  # folders indexed into it (duplicate moves avoid them)

    @property
    def created(self) -> bool:
        """True once an embedder was recorded, i.e. the collection has been set up."""
        return bool(self.embedder_name)


def _json_codec(default: Callable[[], Any]) -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    return (lambda value: json.dumps(value)), (lambda text: json.loads(text) if text else default())


def _dataclass_codec(kind: type) -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    return (lambda value: json.dumps(asdict(value))), (lambda text: kind(**json.loads(text)))


# field name -> (meta key, encode, decode). The keys are those of every earlier version: collections open as they are.
_CODECS: dict[str, tuple[str, Callable[[Any], str], Callable[[str], Any]]] = {
    "embedder_name": ("embedder_name", str, str),
    "embedder_id": ("embedder", str, str),
    "dim": ("dim", str, int),
    "metric": ("metric", str, str),
    "index_kind": ("index_kind", str, str),
    "index_options": ("index_options", *_json_codec(dict)),
    "index_plan": ("index_plan", *_dataclass_codec(IndexPlan)),
    "index_state": ("index_state", *_dataclass_codec(IndexState)),
    "index_trained_count": ("index_trained_count", str, int),
    "search_defaults": ("search_defaults", *_json_codec(dict)),
    "search_tuning": ("search_tuning", *_json_codec(dict)),
    "scanned_roots": ("scanned_roots", *_json_codec(list)),
}


def read_settings(catalog: Catalog) -> Settings:
    """The settings stored in `catalog` (defaults for keys never written)."""
    stored = catalog.all_meta()
    values = {}
    for name, (key, _, decode) in _CODECS.items():
        if key in stored:
            values[name] = decode(stored[key])
    return Settings(**values)


def store_settings(catalog: Catalog, **changes: Any) -> None:
    """Write the given settings in one transaction (a value of None for an optional setting is skipped)."""
    known = {f.name for f in fields(Settings)}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"not settings: {', '.join(sorted(unknown))}")
    encoded = {}
    for name, value in changes.items():
        if value is None:
            continue
        key, encode, _ = _CODECS[name]
        encoded[key] = encode(value)
    catalog.set_meta(encoded)


def with_changes(settings: Settings, **changes: Any) -> Settings:
    """`settings` with some values replaced (for callers that stored them and go on without re-reading)."""
    return replace(settings, **{name: value for name, value in changes.items() if value is not None})


def write_manifest(folder: Path, settings: Settings, preprocessing: str) -> None:
    """Rewrite `manifest.json`: embedder, metric, index and search settings, versions."""
    plan = settings.index_plan.to_dict() if settings.index_plan else {}
    state = asdict(settings.index_state) if settings.index_state else {}
    manifest = {
        "lookalike_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "faiss_version": faiss.__version__,
        "embedder": {
            "id": settings.embedder_id,
            "name": settings.embedder_name,
            "dim": settings.dim,
            "preprocessing": preprocessing,
        },
        "metric": settings.metric,
        "index": {**plan, **state},
        "search_defaults": settings.search_defaults,
    }
    atomic_write_bytes(folder / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
