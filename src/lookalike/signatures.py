"""A small pixel-level signature per image, to tell `same-image` copies from `near` ones.

An embedding says two files show the same scene; it barely moves when a picture
is cropped a little, toned or watermarked, which is what makes it good at finding
near-duplicates and poor at telling them from exact re-encodings. The signature
is the picture itself, shrunk: a 32 x 32 grey thumbnail (1,024 bytes) and an
8 x 8 colour thumbnail (192 bytes), both made from the 224 x 224 pixels ingest
already decodes, so computing them costs no extra decode. Two re-encodings,
resizes or format conversions of one picture have thumbnails a grey level or two
apart; a 5% crop, a tone change, a turn or a watermark move them by much more
(see docs/benchmarks.md, "Duplicates"). The grey thumbnail is blind to hue by
design (a tone change must not break a match); the colour thumbnail tells a
green arrow from the same arrow in blue.

`compute_signature` is a pure function (pixels in, bytes out) so that ingest can
store its result next to the embedding; `signature_distance` compares two.
Signatures stored before the colour thumbnail existed (grey only, 1,024 bytes)
are still read: they are compared on grey alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .errors import LookalikeError

SIGNATURE_SIDE = 32
THUMBNAIL_BYTES = SIGNATURE_SIDE * SIGNATURE_SIDE  # the grey thumbnail, first in a signature
COLOUR_SIDE = 8
COLOUR_BYTES = COLOUR_SIDE * COLOUR_SIDE * 3  # the colour thumbnail (RGB), after the grey one
SIGNATURE_BYTES = THUMBNAIL_BYTES + COLOUR_BYTES
# The layout is told by the length: THUMBNAIL_BYTES (grey only, as first stored) or SIGNATURE_BYTES.
SIGNATURE_VERSION = "grey32-rgb8-v2"
# ITU-R BT.601 luma weights, as Pillow's "L" conversion uses.
_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


class SignatureError(LookalikeError):
    """Pixels or signature bytes that do not have the expected shape."""


def compute_signature(pixels: np.ndarray) -> bytes:
    """The signature of `pixels` (uint8, H x W x 3, H and W multiples of 32): a 32 x 32 grey thumbnail (1,024
    bytes) followed by an 8 x 8 RGB thumbnail (192 bytes).

    Each thumbnail pixel is the mean of a block (7 x 7 and 28 x 28 for the 224 x 224 input of
    EfficientNet-Lite0): box averaging is exact and independent of any resampling library's version, so the
    same pixels always give the same bytes.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise SignatureError(f"expected H x W x 3 pixels, got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    if height % SIGNATURE_SIDE or width % SIGNATURE_SIDE:
        raise SignatureError(f"pixels {width}x{height} are not a multiple of {SIGNATURE_SIDE} on each side")
    colour = pixels.astype(np.float32)
    grey = colour @ _LUMA
    blocks = grey.reshape(SIGNATURE_SIDE, height // SIGNATURE_SIDE, SIGNATURE_SIDE, width // SIGNATURE_SIDE)
    thumbnail = blocks.mean(axis=(1, 3))
    colour_blocks = colour.reshape(COLOUR_SIDE, height // COLOUR_SIDE, COLOUR_SIDE, width // COLOUR_SIDE, 3)
    colour_thumbnail = colour_blocks.mean(axis=(1, 3))
    return _to_bytes(thumbnail) + _to_bytes(colour_thumbnail)


def _to_bytes(values: np.ndarray) -> bytes:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8).tobytes()


def signature_array(signature: bytes) -> np.ndarray:
    """The grey thumbnail of a signature as a float32 vector of 1,024 grey levels."""
    if len(signature) not in (THUMBNAIL_BYTES, SIGNATURE_BYTES):
        raise SignatureError(f"a signature has {SIGNATURE_BYTES} (or {THUMBNAIL_BYTES}) bytes, got {len(signature)}")
    return np.frombuffer(signature, dtype=np.uint8, count=THUMBNAIL_BYTES).astype(np.float32)


def colour_array(signature: bytes) -> np.ndarray | None:
    """The colour thumbnail of a signature as float32 (8, 8, 3) RGB; None for a grey-only signature."""
    if len(signature) != SIGNATURE_BYTES:
        return None
    colour = np.frombuffer(signature, dtype=np.uint8, offset=THUMBNAIL_BYTES).astype(np.float32)
    return colour.reshape(COLOUR_SIDE, COLOUR_SIDE, 3)


# Colour comparison, measured on the duplicate benchmark's pairs (docs/benchmarks.md, "Duplicates").
CHROMA_SIDE = 4  # blocks per side: coarse enough that a 10% crop or a 5 degree turn barely moves them
COLOURED = 6.0  # RMS chroma (grey levels) above which a picture's colours are worth comparing
GREY = 1.5  # RMS chroma below which a picture is grey: it may be a desaturated copy, so colours are not compared
HUE_AGREEMENT = 0.7  # chroma fields less aligned than this (cosine) show other colours in the same places


@functools.lru_cache(maxsize=65_536)
def _chroma(signature: bytes) -> tuple[np.ndarray, float] | None:
    """Blue- and red-difference chroma (Cb, Cr unscaled) of 4 x 4 blocks as a unit vector, and its RMS over
    the blocks in grey levels; None for a grey-only signature. Cached: grouping compares each file often."""
    colour = colour_array(signature)
    if colour is None:
        return None
    factor = COLOUR_SIDE // CHROMA_SIDE
    blocks = colour.reshape(CHROMA_SIDE, factor, CHROMA_SIDE, factor, 3).mean(axis=(1, 3))
    luma = blocks @ _LUMA
    chroma = np.stack([blocks[..., 2] - luma, blocks[..., 0] - luma], axis=-1).ravel()
    length = float(np.linalg.norm(chroma))
    return chroma / max(length, 1e-6), length / CHROMA_SIDE  # RMS over the 16 blocks: length / sqrt(16)


def colours_differ(first: bytes, second: bytes) -> bool:
    """Whether two signatures show other colours in the same places: a green arrow and a blue one, a lemon
    and a lime. Brightness, contrast, saturation and gamma changes scale chroma but keep its direction, so
    they pass; a grey picture passes against anything (it may be a desaturated copy). False when either
    signature has no colour thumbnail."""
    a, b = _chroma(first), _chroma(second)
    if a is None or b is None:
        return False
    low, high = sorted((a[1], b[1]))
    if low < GREY or high <= COLOURED:
        return False
    return float(a[0] @ b[0]) < HUE_AGREEMENT


SAME_COLOURFULNESS = 0.6  # the less colourful of a same-image pair keeps at least this share of the other's chroma


def colourfulness_differs(first: bytes, second: bytes) -> bool:
    """Whether one picture keeps much less colour than the other: a black-and-white or desaturated copy, which
    is an edit, not the same picture. Re-encodes, conversions and resizes kept at least 0.82 of the chroma on
    the benchmark's copies. False when the more colourful one is nearly grey, or a signature has no colour."""
    a, b = _chroma(first), _chroma(second)
    if a is None or b is None:
        return False
    low, high = sorted((a[1], b[1]))
    return high > COLOURED and low < SAME_COLOURFULNESS * high


def signature_distance(first: bytes, second: bytes) -> float:
    """Root-mean-square difference of two thumbnails, in grey levels (0 = the same pixels, 255 = opposite)."""
    difference = signature_array(first) - signature_array(second)
    return float(np.sqrt(np.mean(difference * difference)))


def coarse_distance(first: bytes, second: bytes) -> float:
    """`signature_distance` of the thumbnails shrunk to 16 x 16: halving a small drawing loses its thin lines,
    which moves its 32 x 32 thumbnail several grey levels but its 16 x 16 one only one or two, while a
    different drawing of the same size stays far at either scale."""
    a = signature_array(first).reshape(16, 2, 16, 2).mean(axis=(1, 3))
    b = signature_array(second).reshape(16, 2, 16, 2).mean(axis=(1, 3))
    return float(np.sqrt(np.mean((a - b) ** 2)))


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
    # Inside by a pixel's margin: a thumbnail pixel on the edge of the fill mixes fill into its average.
    inside = ((sx >= 0.5) & (sx <= side - 1.5) & (sy >= 0.5) & (sy <= side - 1.5)).ravel()
    sx, sy = np.clip(sx, 0, side - 1).ravel(), np.clip(sy, 0, side - 1).ravel()
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


def _whole_and_turned(flat: np.ndarray, candidates: np.ndarray, aspect: float, watermarks: bool) -> np.ndarray:
    """The best Pearson correlation of each candidate thumbnail (rows of `candidates`) with `flat` (of a
    picture `aspect` times as wide as high) over `_views`: whole, turned (each turn over its inside pixels
    only) and turned and enlarged to fill (less `ZOOMED_TURN_MARGIN`); with `watermarks`, each without one of
    the watermark boxes."""
    look = _views(round(min(max(aspect, 0.25), 4.0), 2), watermarks)  # rounded: a few lookups serve all
    views = (flat.astype(np.float64)[look.sources] * look.weights).sum(axis=1)  # (views, pixels)
    views = np.tile(views, (len(look.masks) // len(views), 1))
    correlations = _masked_correlations(views, look.masks, look.counts, candidates)
    return (correlations - look.margins).max(axis=1).astype(np.float32)


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
    thumbnail = signature_array(wider).reshape(SIGNATURE_SIDE, SIGNATURE_SIDE)
    raw = np.stack([signature_array(other) for other in others])
    best = _whole_and_turned(thumbnail.ravel(), raw, aspect, watermarks=False)
    candidates = _standardise(raw)
    if crops:
        rows = np.matmul(_CROPS, thumbnail)  # every vertical crop: (25, 32, 32)
        coarse = _standardise(_crop_views(rows, _COARSE, _COARSE)) @ candidates.T  # (81, len(others))
        for column, view in enumerate(coarse.argmax(axis=0).tolist()):
            vertical, horizontal = _COARSE[view // len(_COARSE)], _COARSE[view % len(_COARSE)]
            fine = _standardise(_crop_views(rows, _around(vertical), _around(horizontal))) @ candidates[column]
            best[column] = max(best[column], coarse[view, column], fine.max())
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


def _watermark_masks(rows: int = 4, columns: int = 8) -> np.ndarray:
    """(6, 1,024) booleans: the whole thumbnail but one box (an eighth of its height, a quarter of its width),
    in each corner and in the middle of the top and bottom edges: where a watermark, a logo, a caption or a
    date stamp is put. The two middle boxes found 6 more of 22 copies with a caption at the bottom centre and
    cost no precision on the benchmark's sets."""
    masks = np.ones((6, SIGNATURE_SIDE, SIGNATURE_SIDE), dtype=bool)
    top, bottom = slice(0, rows), slice(SIGNATURE_SIDE - rows, SIGNATURE_SIDE)
    left, right = slice(0, columns), slice(SIGNATURE_SIDE - columns, SIGNATURE_SIDE)
    middle = slice((SIGNATURE_SIDE - columns) // 2, (SIGNATURE_SIDE + columns) // 2)
    boxes = ((top, left), (top, right), (bottom, left), (bottom, right), (top, middle), (bottom, middle))
    for box, (ys, xs) in enumerate(boxes):
        masks[box, ys, xs] = False
    return masks.reshape(6, -1)


_WATERMARK_MASKS = _watermark_masks()


def watermark_masked_correlation(first: bytes, others: list[bytes], aspect: float = 1.0) -> np.ndarray:
    """For each of `others`, the best Pearson correlation of its thumbnail with `first`'s (whole, or turned
    as `crop_tolerant_correlation` turns it) leaving out one box where watermarks go (`_watermark_masks`): a
    watermark on a drawing on a plain background moves the whole-picture correlation a lot, and the rest of
    the picture not at all."""
    candidates = np.stack([signature_array(other) for other in others])
    return _whole_and_turned(signature_array(first), candidates, aspect, watermarks=True)


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


# The IJG standard luminance quantization table (quality 50), in natural order; JPEG encoders scale it.
_STANDARD_LUMA = np.asarray(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip


def estimate_jpeg_quality(data: bytes) -> int | None:
    """The IJG quality (1-100) a JPEG file was saved with, from its luminance table; None if not a JPEG.

    Reads only the header. Pixels cannot tell a heavy JPEG of a flat drawing from a careful re-encode (their
    thumbnails differ by a grey level or two either way); the file's own quantization table can.
    """
    import io

    from PIL import Image

    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            tables = getattr(image, "quantization", None) or {}
    except (OSError, ValueError, SyntaxError):
        return None
    if 0 not in tables or len(tables[0]) != 64:
        return None
    # Pillow returns tables in zig-zag order on some versions and natural order on others; the mean ratio to
    # the standard table is the same either way up to a few percent, which is all this estimate needs.
    scale = float(np.mean(np.asarray(tables[0], dtype=np.float64) / _STANDARD_LUMA)) * 100.0
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(np.clip(round(quality), 1, 100))


_EXIF_IFDS = (0x8769, 0x8825)  # the Exif and GPS sub-directories of IFD0


def count_metadata_fields(data: bytes) -> int:
    """How many metadata fields a file's header bytes hold: EXIF tags (with the Exif and GPS directories), text
    chunks and XMP packets. 0 for a file without any, or one Pillow cannot identify from these bytes."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = image.getexif()
            pointers = sum(1 for ifd in _EXIF_IFDS if ifd in exif)  # links to the sub-directories, not fields
            fields = len(exif) - pointers + sum(len(exif.get_ifd(ifd)) for ifd in _EXIF_IFDS)
            text = [key for key, value in image.info.items() if isinstance(value, str) or key in ("xmp", "comment")]
            return fields + len(text)
    except Exception:  # noqa: BLE001 - a header Pillow cannot read has no metadata worth counting
        return 0
