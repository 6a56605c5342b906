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
