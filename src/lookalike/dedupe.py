"""A collection's duplicates: grouping from what the catalog stores, review decisions, and safe actions
whose every file operation the catalog follows.

`duplicates.py` groups facts and vectors it is given; this module reads them from the catalog (rows,
embeddings, signatures, decisions by content hash) and writes back what actions do:

- a file moved into a quarantine folder leaves the collection (its row becomes a tombstone, so searches stop
  returning it at once), and its row, embedding and signature are kept aside in the catalog;
- undoing the move puts each file back and its row with it (a new id, the same facts and embedding: no model
  runs), so the collection is as it was;
- a copy replaced by a hard link keeps its row; only its recorded mtime follows the link's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .catalog import Catalog, NewImage
from .catalog_duplicates import DECISION_KINDS, QuarantinedRow
from .duplicates import Decisions, DuplicateGroup, ImageFacts, find_duplicates
from .errors import InvalidArgumentError, NotIndexedError
from .quarantine import Plan, QuarantineError, Step, apply_plan, plan_hardlinks, plan_move, plan_undo, undo

ACTIONS = ("move", "hardlink", "undo")


def collection_facts(catalog: Catalog) -> tuple[list[ImageFacts], np.ndarray]:
    """Every indexed image's facts (with its signature when stored) and its L2-normalised embedding, by id."""
    ids_parts, vector_parts = [], []
    for ids, vectors in catalog.iter_embeddings():
        ids_parts.append(ids)
        vector_parts.append(vectors)
    if not ids_parts:
        return [], np.zeros((0, 0), dtype=np.float32)
    ids = np.concatenate(ids_parts)
    vectors = np.concatenate(vector_parts)
    # Stored vectors are normalised by the embedder already; this keeps an old or foreign catalog safe.
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    records = catalog.images_by_id(ids.tolist())
    signatures = catalog.signatures(ids.tolist())
    facts = []
    for image_id in ids.tolist():
        record, signature = records[image_id], signatures.get(image_id)
        facts.append(
            ImageFacts(
                id=image_id,
                path=record.path,
                size=record.size,
                content_hash=record.content_hash,
                width=record.width,
                height=record.height,
                mtime_ns=record.mtime_ns,
                signature=signature.signature if signature else None,
                jpeg_quality=signature.jpeg_quality if signature else None,
                metadata_fields=signature.metadata_fields if signature else 0,
            )
        )
    return facts, vectors


def stored_decisions(catalog: Catalog, facts: Sequence[ImageFacts]) -> Decisions:
    """The catalog's decisions (by content hash) as sets of today's image ids."""
    ids_by_hash: dict[str, list[int]] = {}
    for item in facts:
        if item.content_hash is not None:
            ids_by_hash.setdefault(item.content_hash, []).append(item.id)
    apart: list[frozenset[int]] = []
    kept: list[frozenset[int]] = []
    for kind, hashes in catalog.decisions():
        ids = frozenset(i for content_hash in hashes for i in ids_by_hash.get(content_hash, ()))
        if len(ids) > 1:
            (apart if kind == "not-duplicates" else kept).append(ids)
    return Decisions(not_duplicates=tuple(apart), keep_all=tuple(kept))


def group_collection(
    catalog: Catalog,
    embedder: str,
    tier: str,
    threshold: float | None,
    reference: Iterable[str],
    linkage: str,
) -> list[DuplicateGroup]:
    """The duplicate groups of everything the catalog has indexed, respecting its stored decisions."""
    facts, vectors = collection_facts(catalog)
    folders = [os.path.abspath(os.fspath(folder)) for folder in reference]
    return find_duplicates(
        facts,
        vectors,
        embedder,
        tier=tier,
        threshold=threshold,
        decisions=stored_decisions(catalog, facts),
        reference_folders=folders,
        linkage=linkage,
    )


def record_decision(catalog: Catalog, kind: str, ids: Iterable[int]) -> int:
    """Store a review decision over indexed images (by their content hashes, which outlive ids)."""
    if kind not in DECISION_KINDS:
        raise InvalidArgumentError(f"unknown decision {kind!r}: choose one of {', '.join(DECISION_KINDS)}", "kind")
    wanted = sorted({int(i) for i in ids})
    if len(wanted) < 2:
        raise InvalidArgumentError("a decision needs at least two images", "ids")
    records = catalog.images_by_id(wanted)
    missing = [i for i in wanted if i not in records or records[i].status != "indexed"]
    if missing:
        raise NotIndexedError(f"no indexed image has id {missing[0]}")
    hashes = {records[i].content_hash for i in wanted if records[i].content_hash}
    return catalog.add_decision(kind, hashes)  # type: ignore[arg-type]  # indexed rows always have a hash


def plan_action(
    action: str, groups: Sequence[DuplicateGroup], folder: str | os.PathLike | None, roots: Sequence[str]
) -> Plan:
    """What `action` would do: "move" non-keepers into `folder`, "hardlink" identical copies, or "undo" a move
    into `folder`. Nothing on disk changes. A quarantine folder inside a scanned root is refused, since the
    next index run would bring the files back in."""
    if action not in ACTIONS:
        raise InvalidArgumentError(f"unknown action {action!r}: choose one of {', '.join(ACTIONS)}", "action")
    if action == "hardlink":
        return plan_hardlinks(groups)
    if folder is None:
        raise InvalidArgumentError(f"the {action} action needs a quarantine folder", "folder")
    target = Path(os.path.abspath(os.fspath(folder)))
    if action == "undo":
        return plan_undo(target)
    for root in roots:
        if target == Path(root) or Path(root) in target.parents:
            raise QuarantineError(
                f"{target} is inside {root}, which this collection indexes: choose a folder outside it"
            )
    return plan_move(groups, target)


def apply_action(catalog: Catalog, plan: Plan) -> list[Step]:
    """Carry out a plan; the catalog follows each file operation as it happens (see the module's docstring)."""
    follow = _CatalogFollower(catalog)
    if plan.kind == "restore":
        assert plan.folder is not None
        return undo(plan.folder, on_step=follow)
    return apply_plan(plan, on_step=follow)


class _CatalogFollower:
    """Updates the catalog after each step, so an interrupted action leaves files and rows in step."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def __call__(self, step: Step) -> None:
        if step.image_id is None:
            return
        if step.kind == "move":
            self._moved_out(step.image_id)
        elif step.kind == "restore":
            self._restored(step.image_id, step.target)
        elif step.kind == "hardlink":
            info = os.stat(step.target)
            self.catalog.update_file_facts(step.image_id, info.st_size, info.st_mtime_ns)

    def _moved_out(self, image_id: int) -> None:
        record = self.catalog.images_by_id([image_id]).get(image_id)
        vector = self.catalog.embedding(image_id)
        if record is None or vector is None or record.content_hash is None:
            return  # already gone from the catalog (another run removed it): nothing to follow
        kept = QuarantinedRow(
            image_id,
            record.path,
            record.size,
            record.mtime_ns,
            record.content_hash,
            record.width,
            record.height,
            vector,
            self.catalog.signatures([image_id]).get(image_id),
        )
        with self.catalog.transaction():
            self.catalog.keep_quarantined(kept)
            self.catalog.remove_images([image_id])

    def _restored(self, image_id: int, path: str) -> None:
        kept = self.catalog.quarantined(image_id)
        if kept is None:
            return  # moved by another collection's run: the next index run embeds the file again
        info = os.stat(path)
        image = NewImage(
            path,
            info.st_size,
            info.st_mtime_ns,
            kept.content_hash,
            kept.width or 0,
            kept.height or 0,
            kept.vector,
            kept.signature,
        )
        with self.catalog.transaction():
            self.catalog.add_indexed([image])
            self.catalog.forget_quarantined(image_id)
