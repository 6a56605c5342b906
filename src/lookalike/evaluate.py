"""How well a collection finds copies of its own images: seeded edited copies, searched, counted.

`evaluate` samples indexed images with a seed, makes one edited copy of each per edit family
(`edited_copies.py`) in a temporary folder that lies outside the collection and every folder it indexes,
searches every copy on its own (one query per search call, as one `lookalike search` runs) and counts:

- recall@1 and recall@k per family: the original is the first hit, or among the first k;
- the copy flag (accurate mode only): of all hits flagged `copy`, the share that are right, and the share of
  originals flagged;
- latency per query (p50, p99), with the model and the index loaded before the first timed query.

Some hits other than the original are *also right*: the collection images pasted into the copy (paste
backgrounds, mosaic tiles: they are in the copy too), files with the original's exact bytes, and the
collection's own near duplicates of the original (stored embeddings at the duplicates' `near` cosine or
closer). They do not push the original down (its rank counts only the hits before it that are not also
right), and a flag on them is a right flag.

The temporary folder is removed afterwards; the collection is only read. `edited_copies.write_copies` makes
the same copies again for anyone who wants to check the counts.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .edited_copies import TIERS, EditedCopy, choose_families, write_copies
from .errors import InvalidArgumentError, NotFoundError
from .search import QueryResult, check_k, check_mode

if TYPE_CHECKING:
    from .collection import Collection

DEFAULT_SAMPLE = 20
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CopyOutcome:
    """What the search of one edited copy found."""

    family: str
    original_id: int
    original: str
    seed: int
    others: tuple[int, ...]  # the collection's images pasted into the copy
    rank: int | None  # 1-based rank of the original among the first k hits, not counting others also right
    flagged: int | None  # hits flagged as copies (None in the fast mode, which has no copy flag)
    flagged_right: int | None  # of those, the original and the others also right
    original_flagged: bool | None  # the original itself is among the flagged hits
    seconds: float


@dataclass(frozen=True)
class FamilyRecall:
    """Recall of one edit family (or of all of them)."""

    copies: int
    recall_at_1: float
    recall_at_k: float


@dataclass(frozen=True)
class EvalReport:
    """What `evaluate` measured."""

    mode: str
    edits: str
    families: list[str]
    seed: int
    k: int
    images: int  # images whose copies were searched
    outcomes: list[CopyOutcome] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # sampled originals that could not be read

    def recall(self) -> dict[str, FamilyRecall]:
        """Recall per family, in the order of `families`, and `all` over every copy."""
        table = {name: _recall([o for o in self.outcomes if o.family == name], self.k) for name in self.families}
        table["all"] = _recall(self.outcomes, self.k)
        return table

    def copy_flag(self) -> dict[str, Any] | None:
        """Precision and recall of the copy flag at the default threshold; None in the fast mode."""
        if self.mode != "accurate":
            return None
        flagged = sum(o.flagged or 0 for o in self.outcomes)
        right = sum(o.flagged_right or 0 for o in self.outcomes)
        originals = sum(1 for o in self.outcomes if o.original_flagged)
        return {
            "flagged": flagged,
            "right": right,
            "precision": right / flagged if flagged else None,
            "originals_flagged": originals,
            "recall": originals / len(self.outcomes) if self.outcomes else None,
        }

    def latency_ms(self) -> dict[str, float | None]:
        """Per-query latency, p50 and p99, in milliseconds."""
        seconds = np.asarray([o.seconds for o in self.outcomes], dtype=np.float64) * 1000.0
        if not len(seconds):
            return {"p50": None, "p99": None}
        return {"p50": float(np.percentile(seconds, 50)), "p99": float(np.percentile(seconds, 99))}

    def to_dict(self) -> dict[str, Any]:
        """One JSON shape (see the README's `lookalike eval`)."""
        from .verify import COPY_THRESHOLD

        flag = self.copy_flag()
        return {
            "mode": self.mode,
            "edits": self.edits,
            "seed": self.seed,
            "k": self.k,
            "images": self.images,
            "copies": len(self.outcomes),
            "recall": {name: asdict(row) for name, row in self.recall().items()},
            "copy_flag": None if flag is None else {"threshold": COPY_THRESHOLD, **flag},
            "latency_ms": self.latency_ms(),
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "queries": [asdict(o) for o in self.outcomes],
        }


def _recall(outcomes: Sequence[CopyOutcome], k: int) -> FamilyRecall:
    ranks = [o.rank for o in outcomes]
    count = len(ranks)
    at_1 = sum(1 for r in ranks if r == 1) / count if count else 0.0
    at_k = sum(1 for r in ranks if r is not None and r <= k) / count if count else 0.0
    return FamilyRecall(count, at_1, at_k)


def sample_ids(collection: Collection, sample: int, seed: int) -> list[int]:
    """A seeded sample of `sample` indexed image ids (all of them when there are fewer), ascending."""
    if sample < 1:
        raise InvalidArgumentError(f"the sample needs at least 1 image, not {sample}", "sample")
    ids = collection.catalog.embedding_ids()
    if not len(ids):
        raise InvalidArgumentError(f"{collection.folder} holds no indexed image to make copies of")
    if len(ids) > sample:
        ids = np.random.default_rng(seed).choice(ids, size=sample, replace=False)
    return sorted(int(i) for i in ids)


def evaluate(
    collection: Collection,
    sample: int = DEFAULT_SAMPLE,
    edits: str = "mild",
    families: Sequence[str] | None = None,
    mode: str = "accurate",
    seed: int = 0,
    k: int = 10,
    scratch: str | os.PathLike | None = None,
    on_progress: Progress | None = None,
) -> EvalReport:
    """Make seeded edited copies of a sample of the collection, search each, and count (see the module's text).

    The copies live in a new folder under `scratch` (default: the system's temporary folder), removed before
    returning; InvalidArgumentError when that folder would lie inside the collection or a folder it indexes.
    """
    check_k(k)
    check_mode(mode)
    chosen = choose_families(edits, families)
    ids = sample_ids(collection, sample, seed)
    parent = Path(scratch if scratch is not None else tempfile.gettempdir())
    check_outside_collection(collection, parent)
    with tempfile.TemporaryDirectory(prefix="lookalike-eval-", dir=parent) as folder:
        copies, skipped = write_copies(collection, ids, chosen, seed, folder)
        if not copies:
            reasons = "; ".join(f"{path}: {reason}" for path, reason in skipped[:3])
            raise NotFoundError(f"none of the {len(ids)} sampled images could be read ({reasons})")
        outcomes = search_copies(collection, copies, mode, k, on_progress)
    images = len({copy.original_id for copy in copies})
    edits_label = edits if families is None or chosen == list(TIERS[edits]) else f"{edits} (some)"
    return EvalReport(mode, edits_label, chosen, seed, k, images, outcomes, skipped)


def check_outside_collection(collection: Collection, parent: Path) -> None:
    """InvalidArgumentError when copies written under `parent` would land in the collection or its folders."""
    place = parent.resolve()
    folders: list[str | os.PathLike[str]] = [collection.folder, *collection.settings.scanned_roots]
    for folder in folders:
        root = Path(folder).resolve()
        if place == root or root in place.parents:
            raise InvalidArgumentError(
                f"the temporary folder {place} lies inside {root}, which the collection reads: "
                "edited copies are never written there; use a temporary folder elsewhere",
                "scratch",
            )


def search_copies(
    collection: Collection, copies: Sequence[EditedCopy], mode: str, k: int, on_progress: Progress | None = None
) -> list[CopyOutcome]:
    """Search every copy on its own, timed, after one untimed search that loads the model and the index."""
    collection.search([copies[0].path], k=k, mode=mode)
    outcomes = []
    for done, copy in enumerate(copies, start=1):
        started = time.perf_counter()
        result = collection.search([copy.path], k=k, mode=mode)[0]
        seconds = time.perf_counter() - started
        outcomes.append(count_outcome(collection, copy, result, seconds, accurate=mode == "accurate"))
        if on_progress is not None:
            on_progress(done, len(copies))
    return outcomes


def count_outcome(
    collection: Collection, copy: EditedCopy, result: QueryResult, seconds: float, accurate: bool
) -> CopyOutcome:
    """Where the original ranked, and how many flagged hits were right."""
    hit_ids = [hit.id for hit in result.hits]
    also_right = set(copy.others) | same_bytes(collection, copy.original_id)
    also_right |= near_duplicates(collection, copy.original_id, hit_ids)
    rank = rank_of(copy.original_id, hit_ids, also_right)
    flagged, right, original_flagged = None, None, None
    if accurate:  # the fast mode flags nothing
        flags = [hit.id for hit in result.hits if hit.copy]
        flagged = len(flags)
        right = sum(1 for image_id in flags if image_id == copy.original_id or image_id in also_right)
        original_flagged = copy.original_id in flags
    return CopyOutcome(
        copy.family,
        copy.original_id,
        copy.original,
        copy.seed,
        copy.others,
        rank,
        flagged,
        right,
        original_flagged,
        seconds,
    )


def rank_of(original_id: int, hit_ids: Sequence[int], also_right: set[int]) -> int | None:
    """1-based rank of the original among the hits, the hits also right not counted; None when absent."""
    ahead = 0
    for image_id in hit_ids:
        if image_id == original_id:
            return ahead + 1
        if image_id not in also_right:
            ahead += 1
    return None


def same_bytes(collection: Collection, image_id: int) -> set[int]:
    """Other indexed files with exactly the bytes of `image_id`: a search cannot tell them from it."""
    record = collection.catalog.images_by_id([image_id]).get(image_id)
    if record is None or not record.content_hash:
        return set()
    return {other.id for other in collection.catalog.indexed_with_hash(record.content_hash) if other.id != image_id}


def near_duplicates(collection: Collection, image_id: int, hit_ids: Sequence[int]) -> set[int]:
    """The hits that are near duplicates of `image_id` by stored embeddings alone (the duplicates' `near` cosine).

    A collection that holds its own copies of a photo (a crop, a resized file) is not wrong to return them for
    a copy of it. Nothing is counted so for an embedder with no measured thresholds.
    """
    from .duplicate_rules import UnknownThresholdsError, thresholds_for

    try:
        floor = thresholds_for(collection.settings.embedder_name).near_cosine
    except UnknownThresholdsError:
        return set()
    original = collection.catalog.embedding(image_id)
    if original is None:
        return set()
    near = set()
    for other in hit_ids:
        vector = collection.catalog.embedding(other) if other != image_id else None
        if vector is not None and float(np.dot(original, vector)) >= floor:
            near.add(other)
    return near
