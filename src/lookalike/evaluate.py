"""How well a collection finds copies of its own images: seeded edited copies, searched, counted.

`evaluate` samples indexed images with a seed, opens each original (at most `EDIT_SIDE` pixels on its long
side), makes one edited copy per edit family (`edits.py`) in a temporary folder that lies outside the
collection and every folder it indexes, searches every copy on its own (one query per search call, as one
`lookalike search` runs) and counts:

- recall@1 and recall@k per family: the original is the first hit, or among the first k;
- the copy flag (accurate mode only): of all hits flagged `copy`, the share that are right, and the share of
  originals flagged.

Images pasted into a copy (paste backgrounds, mosaic tiles) are other images of the collection, or generated
ones when it holds no other readable image. Those collection images are in the copy too, so finding them is
not a mistake: they and files with the original's exact bytes are *also right*. They do not push the original
down (its rank counts only the hits before it that are not also right), and a flag on them is a right flag.
- latency per query (p50, p99), with the model and the index loaded before the first timed query.

Each copy's edit is seeded from (seed, image id, family), so a run is repeatable and `write_copies` makes the
same copies for anyone who wants to check the counts. The temporary folder is removed afterwards; the
collection is only read.
"""

from __future__ import annotations

import os
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .edits import HARD, MILD, Edit, apply_edit
from .errors import ImageDecodeError, InvalidArgumentError, NotFoundError
from .images import open_image_file
from .search import QueryResult, check_k, check_mode

if TYPE_CHECKING:
    from .collection import Collection

TIERS: dict[str, dict[str, Edit]] = {"mild": MILD, "hard": HARD}
DEFAULT_SAMPLE = 20
EDIT_SIDE = 1024  # originals are edited at this long side at most: a phone photo's full size only slows the edits
OTHER_SIDE = 640  # images pasted into copies need no more
OTHERS_POOL = 16  # other images decoded once and reused for pastes and mosaics, so memory stays bounded
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EditedCopy:
    """One edited copy of a sampled image, written to `path`."""

    family: str
    original_id: int
    original: str  # the original's path in the collection
    seed: int  # the edit's own seed
    path: str
    others: tuple[int, ...] = ()  # ids of the collection's images pasted into the copy


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


def choose_families(edits: str, families: Sequence[str] | None = None) -> list[str]:
    """The families of the tier `edits`, or the given ones (each must belong to that tier)."""
    if edits not in TIERS:
        raise InvalidArgumentError(f"the edits must be one of {', '.join(TIERS)}, not {edits!r}", "edits")
    known = list(TIERS[edits])
    if not families:
        return known
    unknown = [name for name in families if name not in known]
    if unknown:
        raise InvalidArgumentError(
            f"no {edits} edit family is called {', '.join(unknown)}; the {edits} families are {', '.join(known)}",
            "families",
        )
    return list(dict.fromkeys(families))


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


def edit_seed(seed: int, image_id: int, family: str) -> int:
    """The seed of one copy's edit: stable across runs, versions and family orders."""
    state = np.random.SeedSequence([seed, image_id, zlib.crc32(family.encode())]).generate_state(1)
    return int(state[0])


def open_original(path: str, side: int = EDIT_SIDE, max_megapixels: float | None = None) -> Image.Image:
    """An original decoded in bounded memory and shrunk to at most `side` on its long side."""
    picture = open_image_file(path, min_size=side, max_megapixels=max_megapixels)
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    return picture


class OtherImages:
    """Images to paste into a copy: a seeded pool of the collection's images, never the one being copied."""

    def __init__(self, collection: Collection, seed: int, pool: int = OTHERS_POOL) -> None:
        ids = collection.catalog.embedding_ids()
        chosen = np.random.default_rng(seed + 1).permutation(ids)[: pool + 1]  # one more: one may be the original
        self.paths = collection.catalog.indexed_paths(int(i) for i in chosen)
        self.order = [int(i) for i in chosen if int(i) in self.paths]
        self.max_megapixels = collection.max_megapixels
        self.cache: dict[int, Image.Image | None] = {}

    def drawer(self, original_id: int, seed: int) -> tuple[Callable[[], Image.Image], list[int]]:
        """A callable giving another image each time (seeded), for the copy of `original_id`; the ids it gave."""
        rng = np.random.default_rng(seed)
        candidates = [i for i in self.order if i != original_id]
        used: list[int] = []

        def draw() -> Image.Image:
            readable = [i for i in candidates if self._picture(i) is not None]
            if not readable:
                return generated_image(rng)
            chosen = readable[int(rng.integers(0, len(readable)))]
            used.append(chosen)
            picture = self._picture(chosen)
            assert picture is not None  # readable ones decode
            return picture

        return draw, used

    def _picture(self, image_id: int) -> Image.Image | None:
        if image_id not in self.cache:
            try:
                self.cache[image_id] = open_original(self.paths[image_id], OTHER_SIDE, self.max_megapixels)
            except (ImageDecodeError, OSError):  # a file gone or damaged since it was indexed: use the others
                self.cache[image_id] = None
        return self.cache[image_id]


def generated_image(rng: np.random.Generator, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A smooth random colour field, for a collection with no other image to paste."""
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)


def write_copies(
    collection: Collection, ids: Sequence[int], families: Sequence[str], seed: int, folder: str | os.PathLike
) -> tuple[list[EditedCopy], list[tuple[str, str]]]:
    """Write one edited copy of each image per family into `folder` (created if need be); also the originals that
    could not be read."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = collection.catalog.indexed_paths(ids)
    others = OtherImages(collection, seed)
    copies: list[EditedCopy] = []
    skipped: list[tuple[str, str]] = []
    for image_id in ids:
        try:
            photo = open_original(paths[image_id], max_megapixels=collection.max_megapixels)
        except ImageDecodeError as error:
            skipped.append((paths[image_id], error.reason))
            continue
        except OSError as error:
            skipped.append((paths[image_id], error.strerror or str(error)))
            continue
        for family in families:
            copy_seed = edit_seed(seed, image_id, family)
            draw, used = others.drawer(image_id, copy_seed)
            edited = apply_edit(family, photo, copy_seed, draw)
            path = folder / f"{image_id}-{family}.png"  # lossless: the edit alone decides what is lost
            edited.save(path)
            copies.append(EditedCopy(family, image_id, paths[image_id], copy_seed, str(path), tuple(sorted(set(used)))))
    return copies, skipped


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
    also_right = set(copy.others) | same_bytes(collection, copy.original_id)
    rank = rank_of(copy.original_id, [hit.id for hit in result.hits], also_right)
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
