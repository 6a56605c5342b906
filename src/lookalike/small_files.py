"""A second look at small files: the detail a 32 x 32 thumbnail averages away.

A drawing of 100 x 100 pixels and its sibling in a series (two star polygons, one card face and another, an icon
and the same icon in another theme) differ in lines one or two pixels wide: at 32 x 32 their thumbnails correlate as
well as a copy's. Their files tell them apart. A pair of small files of one size that the thumbnails call near is
compared again from the files, in grey at full size: whole, with the tones of one mapped onto the other's, each
turned a little to meet the other, without one box where watermarks go, and for a heavily compressed JPEG also
shrunk by 4 (its blocks). An edit keeps the correlation of one of these views high; a sibling's lines do not line
up in any of them. Measured in docs/benchmarks.md ("Duplicates").

Files that cannot be read any more (moved, deleted, changed size since they were indexed) are not compared: the
thumbnails' verdict stands.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
from PIL import Image

from .duplicate_rules import ImageFacts, heavy_jpeg, same_size
from .errors import LookalikeError
from .images import open_image_file
from .thumbnail_alignment import watermark_boxes

SMALL_FILE_SIDE = 256  # pixels: files at most this long on their longer side are compared from the files
FILE_CORRELATION = 0.97  # the best view's correlation a near pair of small files must reach (swept: docs)
HEAVY_JPEG_CORRELATION = 0.95  # the same, where either file is a heavy JPEG: its blocks cap every view's correlation
MAX_TURN = 6.0  # degrees: near edits turn up to 5
COARSE_TURN_STEP = 1.0  # degrees between the turns tried first
_COARSE_STEPS = round(MAX_TURN / COARSE_TURN_STEP)
COARSE_TURNS = tuple(step * COARSE_TURN_STEP for step in range(-_COARSE_STEPS, _COARSE_STEPS + 1) if step)
OTHER_WAY_FROM = HEAVY_JPEG_CORRELATION - 0.1  # the first turn's best correlation from which the other way is tried too
TURN_MARGIN = 0.05  # of the shorter side: the border a turn fills, left out of a turned view's correlation
WATERMARK_BOX = (0.3, 0.45)  # height and width shares of the box a watermark view leaves out
HEAVY_JPEG_SHRINK = 4  # a heavy JPEG is also compared shrunk by this factor, which averages its blocks away
CACHED_FILES = 4096  # decoded small files kept for the pairs still to compare (at most 64 KiB each, in grey)


class SmallFiles:
    """Compares near pairs of small files from their pixels; each file is decoded once per grouping."""

    def __init__(self) -> None:
        self._grey: OrderedDict[str, np.ndarray | None] = OrderedDict()

    @staticmethod
    def applies(first: ImageFacts, second: ImageFacts) -> bool:
        """Whether a pair is compared from its files: one size, and small."""
        return same_size(first, second) and max(first.width or 0, first.height or 0) <= SMALL_FILE_SIDE

    def agree(self, first: ImageFacts, second: ImageFacts) -> bool:
        """Whether the files of a pair `applies` takes could be one picture lightly edited: some view of one
        correlates with the other at least FILE_CORRELATION. True when either file cannot be read: then the
        thumbnails decide."""
        a, b = self._load(first), self._load(second)
        if a is None or b is None:
            return True
        heavy = heavy_jpeg(first) or heavy_jpeg(second)
        limit = HEAVY_JPEG_CORRELATION if heavy else FILE_CORRELATION
        return any(correlation >= limit for correlation in _view_correlations(a, b, heavy))

    def _load(self, item: ImageFacts) -> np.ndarray | None:
        if item.path in self._grey:
            self._grey.move_to_end(item.path)
            return self._grey[item.path]
        grey = _grey_pixels(item)
        self._grey[item.path] = grey
        if len(self._grey) > CACHED_FILES:
            self._grey.popitem(last=False)
        return grey


def _grey_pixels(item: ImageFacts) -> np.ndarray | None:
    """The file's pixels in 8-bit grey (transparency on white, as its signature), or None if it cannot be read or
    is no longer the size the catalog knows."""
    try:
        image = open_image_file(item.path)
    except LookalikeError:  # every failure to read or decode is an ImageDecodeError
        return None
    if image.size != (item.width, item.height):
        return None
    return np.asarray(image.convert("L"))


def _view_correlations(a: np.ndarray, b: np.ndarray, heavy: bool) -> Iterator[float]:
    """Correlations of views of a pair, cheapest first: whole; without a watermark box; for a heavy JPEG, both
    shrunk; `b` toned like `a`; each turned to meet the other; for a heavy JPEG, both shrunk, then each turned.

    Each side is turned in turn because which file is the copy is not known: turning the original to meet a turned
    copy resamples each once, where turning the copy back resamples it twice and blurs thin lines (a 100 px drawing
    with 2 px lines turned 3 degrees: 0.99 one way, 0.96 the other). (Turned views enlarged to fill, as an editor's
    "straighten" makes them, found 3 more of the variants set's 32 such copies but let through more siblings:
    docs/benchmarks.md.)"""
    yield _correlation(a, b)
    yield _watermark_masked(a, b)
    if heavy:
        yield _correlation(_shrunk(a), _shrunk(b))
    yield _tone_matched(a, b)
    yield from _turned_both_ways(a, b)
    if heavy:
        yield from _turned_both_ways(_shrunk(a), _shrunk(b))


def _turned_both_ways(a: np.ndarray, b: np.ndarray) -> Iterator[float]:
    """`b` turned to meet `a`, then `a` turned to meet `b` unless the first was far off (a sibling's lines stay far
    off both ways; a turned copy's came within 0.03 of its best: the second turn is skipped below OTHER_WAY_FROM)."""
    first = _best_turn(a, b)
    yield first
    if first >= OTHER_WAY_FROM:
        yield _best_turn(b, a)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays of one shape (0 when either is flat)."""
    a, b = a - a.mean(dtype=np.float32), b - b.mean(dtype=np.float32)
    scale = float(np.sqrt(np.dot(a.ravel(), a.ravel()) * np.dot(b.ravel(), b.ravel())))
    return float(np.dot(a.ravel(), b.ravel())) / scale if scale > 0 else 0.0


def _tone_matched(a: np.ndarray, b: np.ndarray) -> float:
    """The correlation of `a` with `b` after mapping each grey level of `b` to the level of `a` at the same rank: a
    tone curve (gamma, levels) bends a copy's levels but keeps their order, which a straight correlation misses."""
    _levels, inverse, counts = np.unique(b.ravel(), return_inverse=True, return_counts=True)
    middle_ranks = (np.cumsum(counts) - counts / 2) * ((a.size - 1) / b.size)
    ranked = np.sort(a.ravel()).astype(np.float32)
    toned = np.interp(middle_ranks, np.arange(a.size), ranked).astype(np.float32)
    return _correlation(a.astype(np.float32), toned[inverse].reshape(b.shape))


def _best_turn(fixed: np.ndarray, moving: np.ndarray) -> float:
    """The best correlation of `fixed` with `moving` turned, inside a margin: every COARSE_TURN_STEP degrees up to
    MAX_TURN, then half a step either side of the best."""
    margin = max(1, round(TURN_MARGIN * min(fixed.shape)))
    if min(fixed.shape) <= 2 * margin + 2:
        return -1.0
    inside = (slice(margin, -margin), slice(margin, -margin))
    kept, image = fixed[inside].astype(np.float32), Image.fromarray(moving)

    def score(degrees: float) -> float:
        turned = image.rotate(degrees, Image.Resampling.BILINEAR, fillcolor=255)
        return _correlation(kept, np.asarray(turned, dtype=np.float32)[inside])

    scores = {degrees: score(degrees) for degrees in COARSE_TURNS}
    best = max(scores, key=scores.__getitem__)
    for degrees in (best - COARSE_TURN_STEP / 2, best + COARSE_TURN_STEP / 2):
        if degrees != 0.0 and abs(degrees) <= MAX_TURN:
            scores[degrees] = score(degrees)
    return max(scores.values())


def _watermark_masked(a: np.ndarray, b: np.ndarray) -> float:
    """The best correlation leaving out one of the `watermark_boxes` (WATERMARK_BOX of the picture's sides)."""
    height, width = a.shape
    box_height, box_width = max(1, int(height * WATERMARK_BOX[0])), max(1, int(width * WATERMARK_BOX[1]))
    a, b = a.astype(np.float32), b.astype(np.float32)
    best = -1.0
    for rows, columns in watermark_boxes(height, width, box_height, box_width):
        keep = np.ones(a.shape, dtype=bool)
        keep[rows, columns] = False
        best = max(best, _correlation(a[keep], b[keep]))
    return best


def _shrunk(a: np.ndarray) -> np.ndarray:
    """`a` averaged over HEAVY_JPEG_SHRINK x HEAVY_JPEG_SHRINK blocks, in 8 bits."""
    f = HEAVY_JPEG_SHRINK
    height, width = a.shape[0] // f * f, a.shape[1] // f * f
    blocks = a[:height, :width].reshape(height // f, f, width // f, f).mean(axis=(1, 3))
    return np.rint(blocks).astype(np.uint8)
