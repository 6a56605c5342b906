"""How two pixel signatures' thumbnails line up under the near tier's edits: crops, turns, a turn and crop,
a watermark, a local change.

Pearson correlation of the 32 x 32 grey thumbnails ignores brightness and contrast; the views tried here make
it ignore a crop of up to 10% per side, a turn of up to 5 degrees (as a turn of the picture itself: a wide
photo's turn is sheared in its square thumbnail), the fill a turn leaves in the corners, and one box where
watermarks go. Each view is a bilinear sampling of the wider picture's thumbnail, and all views and masks of one
comparison come from three matrix products with the candidates. The choices are measured in
docs/benchmarks.md, "Duplicates".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .signatures import SIGNATURE_SIDE, THUMBNAIL_BYTES, signature_array

# Crop fractions tried per side when matching a cropped copy against a wider view; covers the "up to ~10% per
# side" crops of the near tier. Steps of 2.5% found 86% of the benchmark's crops, steps of 5% 72%.
CROP_STEPS = (0.0, 0.025, 0.05, 0.075, 0.10)


def _crop_matrices(side: int = SIGNATURE_SIDE) -> np.ndarray:
    """(len(CROP_STEPS)**2, side, side) matrices M with M @ x = x cropped (start, end) and stretched back."""
    matrices = []
    for start in CROP_STEPS:
        for end in CROP_STEPS:
            # Output pixel i samples the input at start + (i + 0.5) * (1 - start - end) * side / side - 0.5.
            positions = (start + (np.arange(side) + 0.5) / side * (1 - start - end)) * side - 0.5
            positions = np.clip(positions, 0, side - 1)
            low = np.floor(positions).astype(int)
            high = np.minimum(low + 1, side - 1)
            weight = (positions - low).astype(np.float32)
            matrix = np.zeros((side, side), dtype=np.float32)
            matrix[np.arange(side), low] += 1 - weight
            matrix[np.arange(side), high] += weight
            matrices.append(matrix)
    return np.stack(matrices)


_CROPS = _crop_matrices()
_CROPS_T = np.ascontiguousarray(_CROPS.transpose(0, 2, 1))
# Turns tried, for the "small turn" edits of the near tier; steps of 1.25 degrees found 4 more of the three
# benchmark sets' 1,100 turned copies than steps of 2.5.
TURN_DEGREES = (-5.0, -3.75, -2.5, -1.25, 1.25, 2.5, 3.75, 5.0)


def _turn_sampling(
    degrees: float, aspect: float = 1.0, zoom: float = 1.0, side: int = SIGNATURE_SIDE
) -> tuple[np.ndarray, ...]:
    """Bilinear sampling of a thumbnail turned about its centre: (4, side*side) source pixels and weights, and
    which pixels come from inside the picture (a turned copy's corners show whatever fill the turn used, so
    they are left out). The turn is of a picture `aspect` times as wide as high, as seen in its square
    thumbnail: there the picture is squeezed to a square, so a turn of a wide photo is a turn with a shear."""
    angle = np.deg2rad(degrees)
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float64)
    centre = (side - 1) / 2
    sx = (np.cos(angle) * (xs - centre) - np.sin(angle) / aspect * (ys - centre)) / zoom + centre
    sy = (np.sin(angle) * aspect * (xs - centre) + np.cos(angle) * (ys - centre)) / zoom + centre
    return _bilinear(sx.ravel(), sy.ravel(), side)


def _bilinear(sx: np.ndarray, sy: np.ndarray, side: int) -> tuple[np.ndarray, ...]:
    """Bilinear sampling of a side x side thumbnail at positions (sx, sy), in pixels: (4, n) source pixels and
    weights, and which positions lie a pixel inside the thumbnail (a thumbnail pixel on the edge of a fill
    mixes the fill into its average, so the edge is left out)."""
    inside = (sx >= 0.5) & (sx <= side - 1.5) & (sy >= 0.5) & (sy <= side - 1.5)
    sx, sy = np.clip(sx, 0, side - 1), np.clip(sy, 0, side - 1)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    x1, y1 = np.minimum(x0 + 1, side - 1), np.minimum(y0 + 1, side - 1)
    fx, fy = sx - x0, sy - y0
    sources = np.stack([y0 * side + x0, y0 * side + x1, y1 * side + x0, y1 * side + x1])
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    return sources, weights, inside


# A turned view enlarged to fill its frame (an editor's "turn and crop") is one more guess per turn, so it must
# line up this much better to count: at 0.06 it found 25 of 30 such copies of photo tiles (19 without it) and
# kept the benchmark sets' near recall and pair precision; at 0 the mixed set lost 0.6 points of each.
ZOOMED_TURN_MARGIN = 0.06


@dataclass(frozen=True)
class _Views:
    """How to look at a thumbnail: bilinear samplings (views, 4, pixels) of it, whole, turned and turned and
    enlarged to fill; each view's mask as 0/1 weights (masks x views, pixels), each turn over the pixels it
    keeps inside the picture and, for a second look, without one watermark box; and what each view's
    correlation is lowered by."""

    sources: np.ndarray
    weights: np.ndarray
    masks: np.ndarray
    counts: np.ndarray
    margins: np.ndarray


@functools.lru_cache(maxsize=512)
def _views(aspect: float, watermarks: bool) -> _Views:
    pixels = SIGNATURE_SIDE * SIGNATURE_SIDE
    whole = (
        np.tile(np.arange(pixels), (4, 1)),
        np.vstack([np.ones(pixels), np.zeros((3, pixels))]),
        np.ones(pixels, dtype=bool),
    )
    samplings = [whole] + [_turn_sampling(degrees, aspect) for degrees in TURN_DEGREES]
    samplings += [_turn_sampling(degrees, aspect, _fill_zoom(degrees, aspect)) for degrees in TURN_DEGREES]
    margins = [0.0] * (1 + len(TURN_DEGREES)) + [ZOOMED_TURN_MARGIN] * len(TURN_DEGREES)
    sources, weights, inside = (np.stack(parts) for parts in zip(*samplings))
    keeps = _WATERMARK_MASKS if watermarks else np.ones((1, pixels), dtype=bool)
    masks = (inside[None] & keeps[:, None]).reshape(-1, pixels).astype(np.float64)
    return _Views(sources, weights, masks, masks.sum(axis=1), np.tile(np.asarray(margins), len(keeps)))


def _fill_zoom(degrees: float, aspect: float) -> float:
    """How much a picture turned by `degrees` must be enlarged to fill its frame again (no fill in the corners):
    what an editor's "turn and crop" does."""
    angle = np.deg2rad(abs(degrees))
    return float(np.cos(angle) + np.sin(angle) * max(aspect, 1 / aspect))


def _whole_and_turned(signature: bytes, candidates: np.ndarray, aspect: float, watermarks: bool) -> np.ndarray:
    """The best Pearson correlation of each candidate thumbnail (rows of `candidates`) with `signature`'s (of a
    picture `aspect` times as wide as high) over `_views`: whole, turned (each turn over its inside pixels
    only) and turned and enlarged to fill (less `ZOOMED_TURN_MARGIN`); with `watermarks`, each without one of
    the watermark boxes."""
    rounded = round(min(max(aspect, 0.25), 4.0), 2)  # rounded: a few lookups serve all
    look = _views(rounded, watermarks)
    views = np.tile(_sampled_views(signature, rounded), (len(look.masks) // len(look.sources), 1))
    correlations = _masked_correlations(views, look.masks, look.counts, candidates)
    return (correlations - look.margins).max(axis=1).astype(np.float32)


@functools.lru_cache(maxsize=128)
def _sampled_views(signature: bytes, aspect: float) -> np.ndarray:
    """`_views`' samplings of one signature's thumbnail, (views, pixels): kept for the signatures compared last,
    since grouping compares one image with many others, one pair at a time where their keepers differ (17 MiB at
    most: 17 views of 1,024 float64 pixels each)."""
    look = _views(aspect, False)
    views = (signature_array(signature).astype(np.float64)[look.sources] * look.weights).sum(axis=1)
    views.flags.writeable = False
    return views


def _masked_correlations(
    views: np.ndarray, masks: np.ndarray, counts: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """(candidates, views) Pearson correlations of each candidate with each view over that view's mask (0/1
    weights; `counts` pixels each), from masked sums: three matrix products with the candidates for all views at
    once, instead of a standardised copy of the candidates per mask. 0 where either side is flat."""
    rows = candidates.astype(np.float64)
    masked_views = masks * views
    view_sums = masked_views.sum(axis=1)
    view_spreads = (masked_views * views).sum(axis=1) - view_sums * view_sums / counts
    row_sums = rows @ masks.T
    row_spreads = (rows * rows) @ masks.T - row_sums * row_sums / counts
    covariances = rows @ masked_views.T - row_sums * view_sums / counts
    flat = (row_spreads <= 1e-6 * counts) | (view_spreads <= 1e-6 * counts)
    correlations = covariances / np.sqrt(np.maximum(row_spreads * view_spreads, 1e-12))
    return np.where(flat, 0.0, correlations)


def _standardise(rows: np.ndarray) -> np.ndarray:
    """Rows to zero mean and unit length, so that a dot product is a Pearson correlation (tone-invariant)."""
    rows = rows - rows.mean(axis=-1, keepdims=True)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-6)


def crop_tolerant_correlation(wider: bytes, others: list[bytes], crops: bool = True, aspect: float = 1.0) -> np.ndarray:
    """For each of `others`, the best Pearson correlation of its thumbnail with a crop or turn of `wider`'s.

    With `crops`, crops of 0 to 10% on each side of `wider` (resampled from its thumbnail, in steps of 2.5%)
    are tried, so a cropped copy still lines up with its original: first the 81 crops in steps of 5%, then,
    for each of `others`, the 81 around its best one in steps of 2.5% (correlation changes smoothly with the
    crop, and this tries 162 views of the 625 for the same result on the benchmark's copies). Without
    `crops`, only the whole picture (for a file of the same size, which a crop rarely is). Turns of up to
    5 degrees either way (`TURN_DEGREES`) are always tried, as turns of the picture itself (`aspect`: `wider`'s
    width over its height) and over the pixels they keep inside it. Correlation ignores brightness and
    contrast, and a small watermark only lowers it a little. Flat thumbnails (one grey level) correlate with nothing.
    """
    raw = np.stack([signature_array(other) for other in others])
    best = _whole_and_turned(wider, raw, aspect, watermarks=False)
    return np.maximum(best, cropped_correlation(wider, others)) if crops else best


def cropped_correlation(wider: bytes, others: list[bytes]) -> np.ndarray:
    """For each of `others`, the best Pearson correlation of its thumbnail with a crop of 0 to 10% on each
    side of `wider`'s (the crop search of `crop_tolerant_correlation`, without the whole and turned views)."""
    thumbnail = signature_array(wider).reshape(SIGNATURE_SIDE, SIGNATURE_SIDE)
    candidates = _standardise(np.stack([signature_array(other) for other in others]))
    rows = np.matmul(_CROPS, thumbnail)  # every vertical crop: (25, 32, 32)
    coarse = _standardise(_crop_views(rows, _COARSE, _COARSE)) @ candidates.T  # (81, len(others))
    best = np.empty(len(others), dtype=np.float32)
    for column, view in enumerate(coarse.argmax(axis=0).tolist()):
        vertical, horizontal = _COARSE[view // len(_COARSE)], _COARSE[view % len(_COARSE)]
        fine = _standardise(_crop_views(rows, _around(vertical), _around(horizontal))) @ candidates[column]
        best[column] = max(coarse[view, column], fine.max())
    return best


_STEPS = len(CROP_STEPS)
_COARSE = [start * _STEPS + end for start in range(0, _STEPS, 2) for end in range(0, _STEPS, 2)]  # 0, 5, 10%


def _around(crop: int) -> list[int]:
    """The crops whose start and end are each within one step of `crop`'s (itself included)."""
    start, end = divmod(crop, _STEPS)
    near = [s for s in (start - 1, start, start + 1) if 0 <= s < _STEPS]
    return [s * _STEPS + e for s in near for e in (end - 1, end, end + 1) if 0 <= e < _STEPS]


def _crop_views(rows: np.ndarray, vertical: list[int], horizontal: list[int]) -> np.ndarray:
    """Thumbnails cropped by each of the `vertical` crops (rows already applied) and each `horizontal` one."""
    return np.matmul(rows[vertical][:, None], _CROPS_T[horizontal][None]).reshape(-1, THUMBNAIL_BYTES)


def watermark_boxes(height: int, width: int, box_height: int, box_width: int) -> tuple[tuple[slice, slice], ...]:
    """(rows, columns) of the six boxes of `box_height` x `box_width` where a watermark, a logo, a caption or a
    date stamp is put on a `height` x `width` picture: each corner and the middle of the top and bottom edges."""
    top, bottom = slice(0, box_height), slice(height - box_height, height)
    left, right = slice(0, box_width), slice(width - box_width, width)
    middle = slice((width - box_width) // 2, (width + box_width) // 2)
    return ((top, left), (top, right), (bottom, left), (bottom, right), (top, middle), (bottom, middle))


def _watermark_masks(rows: int = 4, columns: int = 8) -> np.ndarray:
    """(6, 1,024) booleans: the whole thumbnail but one of the `watermark_boxes` (an eighth of its height, a
    quarter of its width). The two middle boxes found 6 more of 22 copies with a caption at the bottom centre and
    cost no precision on the benchmark's sets."""
    masks = np.ones((6, SIGNATURE_SIDE, SIGNATURE_SIDE), dtype=bool)
    for box, (ys, xs) in enumerate(watermark_boxes(SIGNATURE_SIDE, SIGNATURE_SIDE, rows, columns)):
        masks[box, ys, xs] = False
    return masks.reshape(6, -1)


_WATERMARK_MASKS = _watermark_masks()


def watermark_masked_correlation(first: bytes, others: list[bytes], aspect: float = 1.0) -> np.ndarray:
    """For each of `others`, the best Pearson correlation of its thumbnail with `first`'s (whole, or turned
    as `crop_tolerant_correlation` turns it) leaving out one box where watermarks go (`_watermark_masks`): a
    watermark on a drawing on a plain background moves the whole-picture correlation a lot, and the rest of
    the picture not at all."""
    candidates = np.stack([signature_array(other) for other in others])
    return _whole_and_turned(first, candidates, aspect, watermarks=True)


LOCAL_EDIT_LEVEL = 2.5  # RMS grey levels the worst 4 x 4 cell of two thumbnails must differ by ...
LOCAL_EDIT_SHARE = 5.0  # ... and how many times the whole thumbnail's RMS difference that must be


def differs_locally(first: bytes, second: bytes) -> bool:
    """Whether two thumbnails' difference sits in one place: a label, a logo or a date stamp put on a copy.
    A re-encode or a conversion spreads its small differences over the whole picture (on the benchmark's
    copies the worst 4 x 4 cell held at most 3.9 times the whole's RMS difference); a corner watermark put
    5.7 to 7.8 times into one cell."""
    difference = (signature_array(first) - signature_array(second)).reshape(SIGNATURE_SIDE, SIGNATURE_SIDE)
    squares = difference * difference
    cells = squares.reshape(SIGNATURE_SIDE // 4, 4, SIGNATURE_SIDE // 4, 4).mean(axis=(1, 3))
    worst = float(np.sqrt(cells.max()))
    whole = float(np.sqrt(squares.mean()))
    return worst >= LOCAL_EDIT_LEVEL and worst >= LOCAL_EDIT_SHARE * whole


CROPPED_FIT = 2.5  # how many times closer a crop of the wider picture must fit than the whole, to call it a crop


def looks_cropped(wider: bytes, other: bytes, aspect: float = 1.0) -> bool:
    """Whether `other` lines up better with a crop of `wider` than with the whole of it: a crop that kept the
    aspect ratio, not a resize. Measured as how much of the whole picture's misfit (1 - correlation) the best
    crop removes: on the benchmark's copies a resize's best crop left at least 1 / 2.1 of it, a crop of 2-10%
    per side at most 1 / 2.2 (mostly under 1 / 5; smooth photos change little when cropped, so the absolute
    gain can be under 0.005)."""
    whole = signature_array(wider)[None]
    plain = float((_standardise(whole) @ _standardise(signature_array(other)[None]).T)[0, 0])
    best = float(crop_tolerant_correlation(wider, [other], True, aspect)[0])
    return 1.0 - plain >= CROPPED_FIT * max(1.0 - best, 1e-4)


MAX_GROWN_TURN = 7.0  # degrees: the largest turn on a grown canvas that is looked for


def grown_canvas_turn(canvas: tuple[int, int], picture: tuple[int, int]) -> float | None:
    """The turn (degrees, unsigned) that puts a picture of size `picture` (width, height) on a canvas grown to
    hold all of it, as ImageMagick's -rotate does, when the canvas has size `canvas`; None when no turn of 0.5
    to `MAX_GROWN_TURN` degrees does.

    Such a canvas is a cos t + sin t wide and a sin t + cos t high (the picture a wide and 1 high), so the
    aspect ratios tell the turn: tan t = (a - c) / (a c - 1) for canvas aspect c, whatever the canvas was
    scaled to. A square picture's canvas stays square; then the sizes themselves tell it (cos t + sin t is
    the canvas's width over the picture's), if the canvas was not scaled."""
    a, c = picture[0] / picture[1], canvas[0] / canvas[1]
    if abs(a - 1.0) >= 0.05 and abs(a * c - 1.0) > 1e-6:
        degrees = float(np.degrees(np.arctan((a - c) / (a * c - 1.0))))
    else:
        ratio = canvas[0] / picture[0]
        degrees = float(np.degrees(np.arcsin(min(ratio / np.sqrt(2.0), 1.0)))) - 45.0
    return degrees if 0.5 <= degrees <= MAX_GROWN_TURN else None


@functools.lru_cache(maxsize=1024)
def _grown_turn_sampling(degrees: float, picture_aspect: float, side: int = SIGNATURE_SIDE) -> tuple[np.ndarray, ...]:
    """Bilinear sampling of a grown canvas's thumbnail at the picture it holds, turned back by `degrees`:
    (4, pixels) sources and weights, and the pixels sampled a pixel inside the canvas."""
    a, angle = picture_aspect, np.deg2rad(degrees)
    canvas_w = a * abs(np.cos(angle)) + abs(np.sin(angle))
    canvas_h = a * abs(np.sin(angle)) + abs(np.cos(angle))
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float64)
    x, y = ((xs + 0.5) / side - 0.5) * a, (ys + 0.5) / side - 0.5  # the picture's frame, 1 high
    turned_x = np.cos(angle) * x - np.sin(angle) * y
    turned_y = np.sin(angle) * x + np.cos(angle) * y
    sx = ((turned_x / canvas_w + 0.5) * side - 0.5).ravel()
    sy = ((turned_y / canvas_h + 0.5) * side - 0.5).ravel()
    sources, weights, inside = _bilinear(sx, sy, side)
    # ... and a pixel inside the picture's own edges: there the canvas's thumbnail mixes in the fill around it.
    inside &= ((xs >= 1) & (xs <= side - 2) & (ys >= 1) & (ys <= side - 2)).ravel()
    return sources, weights, inside


def grown_canvas_correlation(
    canvas: bytes, others: list[bytes], canvas_size: tuple[int, int], other_sizes: list[tuple[int, int]]
) -> np.ndarray:
    """For each of `others`, the best Pearson correlation of its thumbnail with the picture `canvas` would hold
    if it were that file turned on a grown canvas (the turn told by the two sizes, `grown_canvas_turn`,
    either way); -1 where the sizes tell no small turn. Such a copy is both turned and framed, which neither
    the crops nor the turns of `crop_tolerant_correlation` undo."""
    flat = signature_array(canvas).astype(np.float64)
    best = np.full(len(others), -1.0, dtype=np.float32)
    for i, (other, size) in enumerate(zip(others, other_sizes)):
        degrees = grown_canvas_turn(canvas_size, size)
        if degrees is None:
            continue
        aspect = round(size[0] / size[1], 3)
        samplings = [_grown_turn_sampling(sign * round(degrees, 2), aspect) for sign in (1.0, -1.0)]
        sources, weights, inside = (np.stack(parts) for parts in zip(*samplings))
        views = (flat[sources] * weights).sum(axis=1)
        masks = inside.astype(np.float64)
        correlations = _masked_correlations(views, masks, masks.sum(axis=1), signature_array(other)[None])
        best[i] = float(correlations.max())
    return best
