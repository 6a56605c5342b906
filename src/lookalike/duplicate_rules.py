"""What duplicate grouping decides with: file facts, tier thresholds per embedder, keeper rules, decisions.

Kept apart from the grouping itself (`duplicates.py`) so that the rules a person reads in the docs are in
one short place.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import LookalikeError
from .signatures import coarse_distance, colourfulness_differs, colours_differ, signature_distance
from .thumbnail_alignment import (
    crop_tolerant_correlation,
    cropped_correlation,
    differs_locally,
    grown_canvas_correlation,
    looks_cropped,
    watermark_masked_correlation,
)

TIERS = ("identical", "same-image", "near")
RESIZED_ASPECT_TOLERANCE = 0.02  # two sizes whose aspect ratios differ by less are taken as a resize
SMALL_SIDE = 48  # pixels: a file this small on a side holds less detail than its 32 x 32 thumbnail shows
FEW_PIXELS_SIDE = 128  # pixels: a file this small on a side averages at most 4 x 4 of them into a thumbnail pixel
HEAVY_JPEG_QUALITY = 40  # a JPEG saved below this quality ...
HEAVY_JPEG_GAP = 20  # ... and this far below its counterpart is a heavy re-compression: near, not same-image


class UnknownThresholdsError(LookalikeError):
    """No duplicate thresholds were measured for this embedder."""


@dataclass(frozen=True)
class ImageFacts:
    """What the catalog knows of one file (a row), plus its pixel signature when one is stored."""

    id: int
    path: str
    size: int
    content_hash: str | None
    width: int | None
    height: int | None
    mtime_ns: int
    signature: bytes | None = None
    metadata_fields: int = 0  # EXIF/XMP/text fields; "richer metadata" wins a keeper tie
    jpeg_quality: int | None = None  # signatures.estimate_jpeg_quality of the file's bytes; None if not a JPEG

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)


@dataclass(frozen=True)
class TierThresholds:
    """Cosine and signature limits of the two embedding tiers, for one embedder (docs/benchmarks.md)."""

    same_image_cosine: float  # cosine floor for a same-image pair of the same size
    same_image_signature: float  # max RMS thumbnail difference (grey levels) for a same-image pair
    few_pixels_signature: float  # ... when the files are at most FEW_PIXELS_SIDE on a side
    resized_cosine: float  # the same, when one file is a resize of the other (same aspect, other size)
    resized_signature: float
    resized_coarse_signature: float  # ... and of the thumbnails shrunk to 16 x 16 (signatures.coarse_distance)
    # The same two when either file is at most SMALL_SIDE pixels on a side: the thumbnail holds more detail than
    # such a file, and a resize of a small drawing fades its thin lines.
    small_resized_signature: float
    small_resized_coarse_signature: float
    same_image_cosine_unsigned: float  # cosine alone, when a file has no signature stored (set by hand)
    near_cosine: float  # an embedding this close is a near duplicate on its own ...
    near_pixel_cosine: float  # ... and so is one at least this close whose thumbnail, cropped or turned a
    near_correlation: float  # little, correlates with the keeper's at least this much (signatures.py)
    near_cosine_unsigned: float  # cosine alone, when a file has no signature stored (set by hand)
    # A heavily compressed JPEG's blocks move its embedding far (photos at quality 8-20: cosine down to 0.26)
    # while its thumbnail keeps its tones, so such a pair needs little cosine but thumbnails this close.
    heavy_jpeg_cosine: float
    heavy_jpeg_signature: float

    def with_override(self, tier: str, threshold: float | None) -> TierThresholds:
        """These limits with the cosine floor of `tier` replaced by `threshold` (the CLI's --threshold)."""
        if threshold is None or tier == "identical":
            return self
        if tier == "same-image":
            return replace(self, same_image_cosine=threshold, same_image_cosine_unsigned=threshold)
        return replace(self, near_cosine=threshold, near_cosine_unsigned=threshold)

    def floor(self, tier: str) -> float:
        """The lowest cosine that can link two files at `tier`: neighbours below it are not looked at."""
        if tier == "same-image":
            return min(self.same_image_cosine, self.resized_cosine, self.same_image_cosine_unsigned)
        return min(self.near_cosine, self.near_pixel_cosine, self.near_cosine_unsigned)

    def heavy_jpeg_floor(self, tier: str) -> float:
        """The lowest cosine that can link a heavily compressed JPEG to another file at `tier`."""
        return min(self.floor(tier), self.heavy_jpeg_cosine) if tier == "near" else self.floor(tier)

    def same_image(self, cosine: float, first: ImageFacts, second: ImageFacts) -> bool:
        """Whether two files with embedding cosine `cosine` show the same picture."""
        if _heavier_jpeg(first, second):
            return False
        if first.signature is None or second.signature is None:
            return cosine >= self.same_image_cosine_unsigned
        if colours_differ(first.signature, second.signature):
            return False
        if colourfulness_differs(first.signature, second.signature):
            return False  # a black-and-white or desaturated copy is an edit
        if _resized(first, second):
            wider, other = (first, second) if first.pixels >= second.pixels else (second, first)
            small = min(other.width or 0, other.height or 0) <= SMALL_SIDE
            return (
                cosine >= self.resized_cosine
                and _distance(first, second) <= (self.small_resized_signature if small else self.resized_signature)
                and coarse_distance(first.signature, second.signature)
                <= (self.small_resized_coarse_signature if small else self.resized_coarse_signature)
                and not looks_cropped(wider.signature, other.signature, _aspect(wider))  # type: ignore[arg-type]
            )
        if _sizes_known(first, second) and not same_size(first, second):
            return False  # another size and another shape: cut, not re-encoded or resized
        # A small file's thumbnail pixel averages few of its pixels, so a re-encode's noise shows more in it.
        few_pixels = _sizes_known(first, second) and min(first.width or 0, first.height or 0) <= FEW_PIXELS_SIDE
        return (
            cosine >= self.same_image_cosine
            and _distance(first, second) <= (self.few_pixels_signature if few_pixels else self.same_image_signature)
            and not differs_locally(first.signature, second.signature)
        )

    def near(self, keeper: ImageFacts, candidates: Sequence[tuple[ImageFacts, float]]) -> list[float | None]:
        """For each (file, cosine with the keeper) candidate: None if it is not a near duplicate of `keeper`,
        else how closely it matches, higher is closer (the best thumbnail correlation; the cosine when either
        file has no signature)."""
        closeness: list[float | None] = [None] * len(candidates)
        compared = []
        for i, (item, cosine) in enumerate(candidates):
            if keeper.signature is None or item.signature is None:
                closeness[i] = cosine if cosine >= self.near_cosine_unsigned else None
            elif self._may_be_near(keeper, item, cosine):
                compared.append(i)
        if compared:
            found = self._pixel_correlations(keeper, [candidates[i][0] for i in compared])
            for i, correlation in zip(compared, found.tolist()):
                if correlation >= self.near_correlation or candidates[i][1] >= self.near_cosine:
                    closeness[i] = correlation
        return closeness

    def _may_be_near(self, keeper: ImageFacts, item: ImageFacts, cosine: float) -> bool:
        """Whether a signed pair is close enough in embedding (or, for a heavy JPEG, in tones) to compare
        their pixels, and not told apart by colour."""
        if cosine >= self.near_pixel_cosine:
            close = True
        else:
            close = (
                cosine >= self.heavy_jpeg_cosine
                and _heavier_jpeg(keeper, item)
                and _distance(keeper, item) <= self.heavy_jpeg_signature
            )
        return close and not colours_differ(keeper.signature, item.signature)  # type: ignore[arg-type]

    def _pixel_correlations(self, keeper: ImageFacts, items: Sequence[ImageFacts]) -> np.ndarray:
        """The best thumbnail correlation of each item with the keeper: whole or turned first; then, for those
        that fall short, a second look that fits their edit: without one box where watermarks go (a watermark
        keeps the size), or cropped, or turned on a grown canvas (the keeper is normally the wider view, so its
        crops and its canvas are the ones to try).
        The crop views cost many times more than the rest: only files of another size that need them get them."""
        signatures = [item.signature for item in items]
        aspect = _aspect(keeper)
        found = crop_tolerant_correlation(keeper.signature, signatures, crops=False, aspect=aspect)  # type: ignore[arg-type]
        short = found < self.near_correlation
        for equal_sizes in (True, False):
            look = [i for i, item in enumerate(items) if short[i] and same_size(keeper, item) == equal_sizes]
            if not look:
                continue
            others = [signatures[i] for i in look]
            if equal_sizes:
                again = watermark_masked_correlation(keeper.signature, others, aspect)  # type: ignore[arg-type]
            else:
                # The whole and turned views were tried above: only the crops are new.
                again = cropped_correlation(keeper.signature, others)  # type: ignore[arg-type]
                sizes = [(items[i].width or 1, items[i].height or 1) for i in look]
                canvas = (keeper.width or 1, keeper.height or 1)
                grown = grown_canvas_correlation(keeper.signature, others, canvas, sizes)  # type: ignore[arg-type]
                again = np.maximum(again, grown)
            found[look] = np.maximum(found[look], again)
        return found


# Measured with benchmarks/duplicates.py on its labelled set (docs/benchmarks.md, "Duplicates").
THRESHOLDS: dict[str, TierThresholds] = {
    "efficientnet-lite0": TierThresholds(
        same_image_cosine=0.75,
        same_image_signature=2.5,
        few_pixels_signature=3.0,
        resized_cosine=0.60,
        resized_signature=8.0,
        resized_coarse_signature=4.0,
        small_resized_signature=16.0,
        small_resized_coarse_signature=8.5,
        same_image_cosine_unsigned=0.97,
        near_cosine=0.98,
        near_pixel_cosine=0.50,
        near_correlation=0.88,
        near_cosine_unsigned=0.90,
        heavy_jpeg_cosine=0.20,
        heavy_jpeg_signature=4.0,
    ),
    # Set by hand, not measured: the model-free colour layout only exercises pipelines (tests, demos), and a
    # colour layout is close for any two pictures of one palette, so only very close ones are linked.
    "colour-layout": TierThresholds(
        same_image_cosine=0.99,
        same_image_signature=2.5,
        few_pixels_signature=2.5,
        resized_cosine=0.99,
        resized_signature=8.0,
        resized_coarse_signature=4.0,
        small_resized_signature=8.0,
        small_resized_coarse_signature=4.0,
        same_image_cosine_unsigned=0.995,
        near_cosine=0.999,
        near_pixel_cosine=0.97,
        near_correlation=0.90,
        near_cosine_unsigned=0.98,
        heavy_jpeg_cosine=0.97,
        heavy_jpeg_signature=4.0,
    ),
}


def thresholds_for(embedder: str) -> TierThresholds:
    """The measured thresholds of an embedder, by its name (the part of its identity before '@')."""
    name = embedder.split("@", 1)[0]
    if name not in THRESHOLDS:
        known = ", ".join(sorted(THRESHOLDS))
        raise UnknownThresholdsError(f"no duplicate thresholds measured for embedder {name!r} (known: {known})")
    return THRESHOLDS[name]


def pixel_closeness(first: ImageFacts, second: ImageFacts, cosine: float) -> float:
    """How close two files' pixels are, higher is closer: minus their thumbnails' distance, or the embedding
    cosine when either has no signature."""
    if first.signature is None or second.signature is None:
        return cosine
    return -signature_distance(first.signature, second.signature)


def heavy_jpeg(image: ImageFacts) -> bool:
    """Whether a file is a JPEG saved at a quality low enough for a heavy re-compression."""
    return image.jpeg_quality is not None and image.jpeg_quality < HEAVY_JPEG_QUALITY


def _heavier_jpeg(first: ImageFacts, second: ImageFacts) -> bool:
    """Whether one file is a much more compressed JPEG than the other (a file that is not a JPEG counts as 100)."""
    low, high = sorted((first.jpeg_quality or 100, second.jpeg_quality or 100))
    return low < HEAVY_JPEG_QUALITY and high - low >= HEAVY_JPEG_GAP


def _sizes_known(first: ImageFacts, second: ImageFacts) -> bool:
    return bool(first.width and first.height and second.width and second.height)


def same_size(first: ImageFacts, second: ImageFacts) -> bool:
    """Whether two files have the same known width and height."""
    return bool(first.width and first.height) and (first.width, first.height) == (second.width, second.height)


def _resized(first: ImageFacts, second: ImageFacts) -> bool:
    if not (first.width and first.height and second.width and second.height):
        return False
    if (first.width, first.height) == (second.width, second.height):
        return False
    ratio = (first.width / first.height) / (second.width / second.height)
    return abs(ratio - 1.0) <= RESIZED_ASPECT_TOLERANCE


def _aspect(image: ImageFacts) -> float:
    """Width over height (1 when unknown)."""
    return image.width / image.height if image.width and image.height else 1.0


def _distance(first: ImageFacts, second: ImageFacts) -> float:
    assert first.signature is not None and second.signature is not None
    return signature_distance(first.signature, second.signature)


@dataclass(frozen=True)
class Decisions:
    """What a person decided in an earlier review, by image id.

    `not_duplicates`: sets of ids of which no two may share a group. `keep_all`: sets of ids the person
    keeps all of; a group whose members all fall in one such set is not reported.
    """

    not_duplicates: tuple[frozenset[int], ...] = ()
    keep_all: tuple[frozenset[int], ...] = ()
    _apart: frozenset[tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pairs = {(a, b) for ids in self.not_duplicates for a in ids for b in ids if a < b}
        object.__setattr__(self, "_apart", frozenset(pairs))

    def apart(self, first: int, second: int) -> bool:
        """Whether a person said these two are not duplicates."""
        return (min(first, second), max(first, second)) in self._apart

    def keeps_all(self, ids: Iterable[int]) -> bool:
        """Whether a person chose to keep every one of these ids."""
        wanted = set(ids)
        return any(wanted <= kept for kept in self.keep_all)


def _in_reference(path: str, folders: tuple[str, ...]) -> bool:
    return any(
        os.path.commonpath([path, folder]) == folder
        for folder in folders
        if os.path.isabs(path) == os.path.isabs(folder)
    )


def keeper_key(item: ImageFacts, folders: tuple[str, ...]) -> tuple:
    """Sort key of the keeper rules, best first: reference folder, pixels, bytes, metadata, age, path."""
    return (
        not _in_reference(item.path, folders),
        -item.pixels,
        -item.size,
        -item.metadata_fields,
        item.mtime_ns,
        len(item.path),
        item.path,
        item.id,
    )


def keeper_order(facts: Sequence[ImageFacts], reference_folders: tuple[str, ...]) -> np.ndarray:
    """Positions of `facts` in keeper order: the image that would be kept comes first."""
    folders = tuple(os.path.normpath(folder) for folder in reference_folders)
    keys = [keeper_key(item, folders) for item in facts]
    return np.asarray(sorted(range(len(facts)), key=keys.__getitem__), dtype=np.int64)


def keeper_reason(keeper: ImageFacts, runner_up: ImageFacts, reference_folders: tuple[str, ...] = ()) -> str:
    """The first keeper rule that tells the keeper from the best other member, in words."""
    folders = tuple(os.path.normpath(folder) for folder in reference_folders)
    if _in_reference(keeper.path, folders) and not _in_reference(runner_up.path, folders):
        return "in a reference folder"
    if keeper.pixels != runner_up.pixels:
        return f"more pixels ({keeper.width}x{keeper.height} vs {runner_up.width}x{runner_up.height})"
    if keeper.size != runner_up.size:
        return f"larger file ({keeper.size} vs {runner_up.size} bytes)"
    if keeper.metadata_fields != runner_up.metadata_fields:
        return f"richer metadata ({keeper.metadata_fields} vs {runner_up.metadata_fields} fields)"
    if keeper.mtime_ns != runner_up.mtime_ns:
        return "older file"
    if len(keeper.path) != len(runner_up.path):
        return "shorter path"
    return "first path in order"
