"""A small pixel-level signature per image, to tell `same-image` copies from `near` ones.

An embedding says two files show the same scene; it barely moves when a picture
is cropped a little, toned or watermarked, which is what makes it good at finding
near-duplicates and poor at telling them from exact re-encodings. The signature
is the picture itself, shrunk: a 32 x 32 grey thumbnail (1,024 bytes) made from
the 224 x 224 pixels ingest already decodes, so computing it costs no extra
decode. Two re-encodings, resizes or format conversions of one picture have
thumbnails a grey level or two apart; a 5% crop, a tone change, a turn or a
watermark move them by much more (see docs/benchmarks.md, "Duplicates").

`compute_signature` is a pure function (pixels in, bytes out) so that ingest can
store its result next to the embedding; `signature_distance` compares two.
"""

from __future__ import annotations

import numpy as np

from .errors import LookalikeError

SIGNATURE_SIDE = 32
SIGNATURE_BYTES = SIGNATURE_SIDE * SIGNATURE_SIDE
SIGNATURE_VERSION = "grey32-v1"  # stored with the signatures: a new layout must not be compared with this one
# ITU-R BT.601 luma weights, as Pillow's "L" conversion uses.
_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


class SignatureError(LookalikeError):
    """Pixels or signature bytes that do not have the expected shape."""


def compute_signature(pixels: np.ndarray) -> bytes:
    """A 32 x 32 grey thumbnail of `pixels` (uint8, H x W x 3, H and W multiples of 32), as 1,024 bytes.

    Each thumbnail pixel is the mean of a block (7 x 7 for the 224 x 224 input
    of EfficientNet-Lite0): box averaging is exact and independent of any
    resampling library's version, so the same pixels always give the same bytes.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise SignatureError(f"expected H x W x 3 pixels, got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    if height % SIGNATURE_SIDE or width % SIGNATURE_SIDE:
        raise SignatureError(f"pixels {width}x{height} are not a multiple of {SIGNATURE_SIDE} on each side")
    grey = pixels.astype(np.float32) @ _LUMA
    blocks = grey.reshape(SIGNATURE_SIDE, height // SIGNATURE_SIDE, SIGNATURE_SIDE, width // SIGNATURE_SIDE)
    thumbnail = blocks.mean(axis=(1, 3))
    return np.clip(np.rint(thumbnail), 0, 255).astype(np.uint8).tobytes()


def signature_array(signature: bytes) -> np.ndarray:
    """The thumbnail of a signature as a float32 vector of 1,024 grey levels."""
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"a signature has {SIGNATURE_BYTES} bytes, got {len(signature)}")
    return np.frombuffer(signature, dtype=np.uint8).astype(np.float32)


def signature_distance(first: bytes, second: bytes) -> float:
    """Root-mean-square difference of two thumbnails, in grey levels (0 = the same pixels, 255 = opposite)."""
    difference = signature_array(first) - signature_array(second)
    return float(np.sqrt(np.mean(difference * difference)))


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
TURN_DEGREES = (-5.0, -2.5, 2.5, 5.0)  # turns tried, for the "small turn" edits of the near tier


def _turn_sampling(degrees: float, side: int = SIGNATURE_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear sampling of a thumbnail turned about its centre: (4, side*side) source pixels and weights."""
    angle = np.deg2rad(degrees)
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float64)
    centre = (side - 1) / 2
    sx = np.cos(angle) * (xs - centre) - np.sin(angle) * (ys - centre) + centre
    sy = np.sin(angle) * (xs - centre) + np.cos(angle) * (ys - centre) + centre
    sx, sy = np.clip(sx, 0, side - 1).ravel(), np.clip(sy, 0, side - 1).ravel()
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    x1, y1 = np.minimum(x0 + 1, side - 1), np.minimum(y0 + 1, side - 1)
    fx, fy = sx - x0, sy - y0
    sources = np.stack([y0 * side + x0, y0 * side + x1, y1 * side + x0, y1 * side + x1])
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]).astype(np.float32)
    return sources, weights


_TURNS = [_turn_sampling(degrees) for degrees in TURN_DEGREES]


def _standardise(rows: np.ndarray) -> np.ndarray:
    """Rows to zero mean and unit length, so that a dot product is a Pearson correlation (tone-invariant)."""
    rows = rows - rows.mean(axis=-1, keepdims=True)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.maximum(norms, 1e-6)


def crop_tolerant_correlation(wider: bytes, others: list[bytes], crops: bool = True) -> np.ndarray:
    """For each of `others`, the best Pearson correlation of its thumbnail with a crop or turn of `wider`'s.

    With `crops`, crops of 0, 2.5, 5, 7.5 or 10% on each side of `wider` (625 views, resampled from its
    thumbnail) are tried, so a cropped copy still lines up with its original; without, only the whole
    picture (cheaper: for a file of the same size, which a crop rarely is). Turns of 2.5 and 5 degrees either
    way are always tried. Correlation ignores brightness and contrast, and a small watermark only lowers it
    a little. Flat thumbnails (one grey level) correlate with nothing.
    """
    thumbnail = signature_array(wider).reshape(SIGNATURE_SIDE, SIGNATURE_SIDE)
    flat = thumbnail.ravel()
    views = [flat[None]] + [((flat[sources] * weights).sum(axis=0))[None] for sources, weights in _TURNS]
    if crops:
        rows = np.matmul(_CROPS, thumbnail)  # vertical crops: (25, 32, 32)
        views.append(np.matmul(rows[:, None], _CROPS_T[None]).reshape(-1, SIGNATURE_BYTES))  # and horizontal
    candidates = np.stack([signature_array(other) for other in others])
    return (_standardise(np.concatenate(views)) @ _standardise(candidates).T).max(axis=0)


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
